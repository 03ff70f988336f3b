"""Peak memory of a trace against the bare run (the `mem` cases), GPT-2-small shape.

Linux only: the process's peak resident set (``VmHWM`` in /proc/self/status) is reset before
each run by writing ``5`` to /proc/self/clear_refs, so each run's own peak is read back.

One model in memory: the wrapped model is built over the very module the bare run uses
(``LanguageModel(module, tokenizer=tok)``), so the weights count once on both sides.

Per case, rounds of [bare, traced] (3 of each, the median kept):

    peak_ratio        = (traced peak - bytes of the saved tensors) / bare peak     (the target, <= 1.05)
    working_set_ratio = (traced peak - RSS before - saved) / (bare peak - RSS before)   (information:
                        the run's own allocations, without weights and libraries)

Cases: ``mem_trace12`` (a 64-token forward saving all 12 blocks' outputs, vs the plain forward)
and ``mem_generate`` (10 greedy tokens with ``iter[:]`` saving block 0 per step, vs plain HF
``generate``).
"""
from __future__ import annotations

import ctypes
import gc
import statistics

import cases as C


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _settle() -> None:
    gc.collect()
    try:  # hand freed heap back to the OS, so the RSS before a run is the floor
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _saved_bytes(value, seen=None) -> int:
    import torch

    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        key = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return value.untyped_storage().nbytes()
    if isinstance(value, (list, tuple)):
        return sum(_saved_bytes(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(_saved_bytes(v, seen) for v in value.values())
    return 0


def _peak(fn):
    """(RSS before, peak RSS during, bytes of the tensors fn returned)."""
    _settle()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out = fn()
    peak = _status_kb("VmHWM")
    saved = _saved_bytes(out)
    del out
    return before, peak, saved


def _compare(bare, traced, rounds=3):
    b, t = [], []
    for _ in range(rounds):
        b.append(_peak(bare))
        t.append(_peak(traced))
    b_before = statistics.median(x[0] for x in b)
    b_peak = statistics.median(x[1] for x in b)
    t_before = statistics.median(x[0] for x in t)
    t_peak = statistics.median(x[1] for x in t)
    saved = statistics.median(x[2] for x in t)
    return {
        "peak_ratio": round((t_peak - saved) / b_peak, 4),
        "working_set_ratio": round((t_peak - t_before - saved) / max(1, b_peak - b_before), 4),
        "bare_peak_bytes": b_peak, "traced_peak_bytes": t_peak, "saved_bytes": saved,
        "bare_rss_before": b_before, "traced_rss_before": t_before,
        "rounds": {"bare": b, "traced": t},
    }


def run_memory(names, err) -> dict:
    out = {n: {"times_ns": [], "baseline": None, "baseline_times_ns": [], "error": None, "extra": {}}
           for n in names}
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import nnsight
        from gpt2_small import gpt2_small_path

        path = gpt2_small_path()
        hf = AutoModelForCausalLM.from_pretrained(path).eval()
        tok = AutoTokenizer.from_pretrained(path)
        model = nnsight.LanguageModel(hf, tokenizer=tok)
        ids = tok(C.GPT2_PROMPT * 8, return_tensors="pt").input_ids[:, :64]
        mask = torch.ones_like(ids)
        short = tok(C.GPT2_PROMPT, return_tensors="pt").input_ids

        def bare():
            return hf(input_ids=ids, attention_mask=mask).logits[:, -1:].clone()

        def trace12():
            return C.gpt2_save12(model, ids)

        def hf_generate():
            return hf.generate(input_ids=short, attention_mask=torch.ones_like(short),
                               max_new_tokens=C.GEN_TOKENS, do_sample=False)[:, -1:].clone()

        def generate():
            return C.gpt2_generate_loop(model, short)

        for fn in (bare, trace12, hf_generate, generate):  # warm: imports, compiled units, caches
            fn()
            fn()
        if "mem_trace12" in out:
            out["mem_trace12"]["extra"] = _compare(bare, trace12)
        if "mem_generate" in out:
            out["mem_generate"]["extra"] = _compare(hf_generate, generate)
    except Exception as exc:  # noqa: BLE001
        for n in out:
            out[n]["error"] = err(exc)
    return out
