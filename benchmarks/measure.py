"""Benchmark worker: times cases under whichever `nnsight` this interpreter imports.

    python benchmarks/measure.py --case mlp64_empty,mlp64_save1 --json
    python benchmarks/measure.py --case mlp64 --repeat 300          # a whole group
    python benchmarks/measure.py --list

Each timed case is measured *interleaved with its baseline* (the bare forward of the same
model and batch): `--chunks` blocks of [baseline x k, case x k] (which goes first alternates), so slow drifts of this noisy
machine hit both alike. Per-iteration times come from `time.perf_counter_ns`; warmup calls run
first; the garbage collector is disabled inside each block and run between blocks.

Run it from any directory *except* the repo root when the interpreter is the peer's: a
`nnsight/` folder in the current directory would shadow the installed package for `-c`
subprocesses (compare.py runs everything from a temporary directory).

Output (--json): {"meta": {...}, "cases": {name: {"times_ns": [...], "baseline": name,
"baseline_times_ns": [...], "chunk": k, "median_ns", "baseline_median_ns", "overhead_ns",
"paired_overhead_ns", "error", "extra": {...}}}}
overhead_ns = median(case) - median(baseline); paired_overhead_ns = median over the interleaved
blocks of (block median - baseline block median), robust to load changing mid-run.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases as C  # noqa: E402

now = time.perf_counter_ns


def _median(xs):
    return statistics.median(xs) if xs else None


def _err(exc: BaseException) -> str:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return (f"{type(exc).__name__}: {exc}"[:500] + "\n" + "".join(tb[-3:])[-1500:]).strip()


def time_interleaved(fn, base, repeat: int, warmup: int, chunks: int):
    """Per-call ns of fn (and of base, interleaved in blocks)."""
    for _ in range(warmup):
        fn()
        if base is not None:
            base()
    chunks = max(1, min(chunks, repeat))
    per = max(1, repeat // chunks)
    tf, tb = [], []
    for i in range(chunks):
        gc.collect()
        gc.disable()
        # Which side runs first alternates: the first calls after gc.collect() run on cold
        # caches, and with few calls per block that would bias whichever always went first.
        order = ((base, tb), (fn, tf)) if i % 2 == 0 else ((fn, tf), (base, tb))
        try:
            for f, out in order:
                if f is None:
                    continue
                for _ in range(per):
                    t0 = now()
                    f()
                    out.append(now() - t0)
        finally:
            gc.enable()
    return tf, tb


# ----------------------------------------------------------------------------- special cases


def run_cold(names, args, results):
    """First trace at new call sites. Meaningful only as the first work of a fresh process."""
    out = {n: {"times_ns": [], "baseline": C.CASES[n].baseline, "baseline_times_ns": [], "error": None,
               "extra": {}} for n in names}
    try:
        t0 = now()
        import nnsight  # noqa: F401
        t_import = now() - t0
        ctx = C.Context("mlp64").wrap()
        for _ in range(20):
            ctx.raw(ctx.x)
        tmp = Path(tempfile.mkdtemp(prefix="nnsight-bench-cold-"))
        sys.path.insert(0, str(tmp))
        seed0 = args.seed * 1000

        def new_site(j):
            nonce = uuid.uuid4().hex[:12]
            fn_name, src = C.cold_source(seed0 + j, nonce)
            mod_name = f"cold_{nonce}"
            (tmp / f"{mod_name}.py").write_text(src)
            importlib.invalidate_caches()
            mod = importlib.import_module(mod_name)
            return getattr(mod, fn_name)

        # 1) the very first trace of this process
        f = new_site(0)
        gc.disable()
        t0 = now()
        f(ctx.model, ctx.x)
        first = now() - t0
        t0 = now()
        f(ctx.model, ctx.x)
        second = now() - t0
        gc.enable()
        # 2) warm the package at a fixed call site, then M new call sites
        for _ in range(20):
            C.mlp_save1(ctx.model, ctx.x)
        site_t, site_second = [], []
        for j in range(1, args.cold_sites + 1):
            f = new_site(j)
            gc.collect()
            gc.disable()
            t0 = now()
            f(ctx.model, ctx.x)
            site_t.append(now() - t0)
            t0 = now()
            f(ctx.model, ctx.x)
            site_second.append(now() - t0)
            gc.enable()
        _, bare = time_interleaved(lambda: None, lambda: ctx.raw(ctx.x), 200, 20, 4)
        if "cold_first_trace" in out:
            out["cold_first_trace"].update(
                times_ns=[first], baseline_times_ns=bare,
                extra={"second_call_ns": second, "import_nnsight_in_process_ns": t_import})
        if "cold_new_site" in out:
            out["cold_new_site"].update(
                times_ns=site_t, baseline_times_ns=bare,
                extra={"second_call_median_ns": _median(site_second), "sites": args.cold_sites})
    except Exception as exc:  # noqa: BLE001
        for n in out:
            out[n]["error"] = _err(exc)
    results.update(out)


def run_import(args, results):
    """Wall time of `python -c "import nnsight"` minus `python -c "import torch"` (fresh processes)."""
    env = dict(os.environ)  # PYTHONPATH kept: compare.py sets it for ours only (--ours-tree)
    cwd = tempfile.mkdtemp(prefix="nnsight-bench-import-")  # never a dir holding nnsight/
    res = {"times_ns": [], "baseline": "import torch", "baseline_times_ns": [], "error": None, "extra": {}}

    def one(stmt):
        t0 = now()
        p = subprocess.run([sys.executable, "-c", stmt], cwd=cwd, env=env, capture_output=True, text=True)
        dt = now() - t0
        if p.returncode:
            raise RuntimeError(f"{stmt!r} failed: {p.stderr[-800:]}")
        return dt

    try:
        one("import torch")  # page cache warm for both
        one("import nnsight")
        for _ in range(args.import_samples):
            res["baseline_times_ns"].append(one("import torch"))
            res["times_ns"].append(one("import nnsight"))
    except Exception as exc:  # noqa: BLE001
        res["error"] = _err(exc)
    results["import"] = res


def _payload_probe(ctx):
    """remote='local' payload size, if the package exposes one publicly (else None)."""
    model, ids = ctx.model, ctx.ids  # plain locals: a remote trace ships what its body uses
    try:
        with model.trace(ids, remote="local") as tr:
            model.transformer.h[0].output.save()
    except Exception:  # noqa: BLE001
        return None
    for obj in (tr, getattr(tr, "backend", None)):
        for attr in ("remote_payload", "payload_size", "payload_bytes", "request_size", "payload"):
            v = getattr(obj, attr, None) if obj is not None else None
            if isinstance(v, int):
                return v
            if isinstance(v, (bytes, bytearray, memoryview)):
                return len(v)
    return None


def fallback_counts():
    """Our fast paths' fallback counters (compiler.fallbacks), or None for a package without them."""
    mod = sys.modules.get("compiler.fallbacks")
    if mod is None and "nnsight" in sys.modules:
        try:
            mod = importlib.import_module("compiler.fallbacks")
        except ImportError:
            return None
    return mod.FALLBACKS.counts() if mod is not None else None


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="mlp64", help="comma list of cases and/or groups")
    ap.add_argument("--repeat", type=int, default=None, help="iterations per case (default: per case)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply default iterations")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--chunks", type=int, default=30, help="interleaved blocks of baseline/case")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (same for both packages)")
    ap.add_argument("--cpu", type=int, default=None, help="run pinned to this CPU (compare.py pins both sides to one)")
    ap.add_argument("--cold-sites", type=int, default=20, help="new call sites per cold process")
    ap.add_argument("--import-samples", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="shape seed for cold call sites")
    ap.add_argument("--rounds", type=int, default=5, help=argparse.SUPPRESS)  # for vllm.py; ignored here
    ap.add_argument("--json", action="store_true", help="print JSON (default: a short text summary)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    if args.list:
        for name, c in C.CASES.items():
            tgt = "-" if c.target is None else f"{c.kind}{'>=' if c.at_least else '<='}{c.target}"
            print(f"{name:22s} group={c.group:7s} baseline={c.baseline or '-':18s} target={tgt:12s} {c.note}")
        return 0

    import torch

    torch.set_num_threads(args.threads)
    names = C.expand(args.case)
    results = {}
    meta = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
            "platform": platform.platform(), "threads": args.threads, "pid": os.getpid()}

    cold = [n for n in names if C.CASES[n].group == "cold"]
    if cold:  # first, while the process is still cold
        run_cold(cold, args, results)
    mem = [n for n in names if C.CASES[n].group == "mem"]
    if mem:
        from memory import run_memory

        results.update(run_memory(mem, _err))

    # Plain-torch parts first, and the bare forward timed before `import nnsight`: a package
    # that slows every torch forward globally would otherwise hide that in its baseline.
    contexts = {}
    for g in dict.fromkeys(C.CASES[n].group for n in names):
        if g.startswith("mlp") or g in ("gpt2", "gpt2s"):
            try:
                ctx = contexts[g] = C.Context(g)
                if "nnsight" not in sys.modules:
                    c = C.CASES[f"{g}_bare"]
                    rep = max(3, int(c.repeat * args.scale) // 2)
                    _, tb = time_interleaved(lambda: None, ctx.bare, rep, max(1, int(c.warmup * args.scale)), 5)
                    meta[f"{g}_bare_preimport_ns"] = _median(tb)
            except Exception as exc:  # noqa: BLE001
                for n in names:
                    if C.CASES[n].group == g:
                        results[n] = {"times_ns": [], "baseline": C.CASES[n].baseline, "baseline_times_ns": [],
                                      "error": _err(exc), "extra": {}}
    for name in names:
        if name in results:
            continue
        case = C.CASES[name]
        if case.group in ("cold", "mem", "vllm") or case.derived:
            continue
        if case.group == "import":
            run_import(args, results)
            continue
        res = {"times_ns": [], "baseline": case.baseline, "baseline_times_ns": [], "error": None, "extra": {}}
        results[name] = res
        try:
            ctx = contexts[case.group].wrap()
            fn = case.make(ctx)
            base = C.CASES[case.baseline].make(ctx) if case.baseline else None
            fn()  # smoke: an unsupported feature fails here, untimed
            repeat = args.repeat or max(3, int(case.repeat * args.scale))
            warmup = args.warmup if args.warmup is not None else max(1, int(case.warmup * args.scale))
            tf, tb = time_interleaved(fn, base, repeat, warmup, args.chunks)
            res["times_ns"], res["baseline_times_ns"] = tf, tb
            res["chunk"] = max(1, repeat // max(1, min(args.chunks, repeat)))
            if name == "gpt2_generate":
                res["extra"].update({k: v for k, v in ctx.extra.items() if k.startswith("generate") or k.startswith("hf_")})
            if name == "gpt2_remote_local":
                res["extra"]["payload_bytes"] = _payload_probe(ctx)
        except Exception as exc:  # noqa: BLE001
            res["error"] = _err(exc)

    for ctx in contexts.values():
        meta.update({k: v for k, v in ctx.extra.items() if k in ("gpt2_path", "prompt_ids")})
    try:
        import nnsight

        meta["nnsight_version"] = getattr(nnsight, "__version__", "?")
        meta["nnsight_file"] = getattr(nnsight, "__file__", "?")
    except Exception as exc:  # noqa: BLE001
        meta["nnsight_import_error"] = _err(exc)
    meta["transformers"] = getattr(sys.modules.get("transformers"), "__version__", None)
    meta["fast_path_fallbacks"] = fallback_counts()

    for res in results.values():
        res.setdefault("chunk", 0)
        res["median_ns"] = _median(res["times_ns"])
        # Paired estimate: median over blocks of (block median - baseline block median).
        k = res["chunk"]
        tf, tb = res["times_ns"], res["baseline_times_ns"]
        if k and tb and len(tf) == len(tb):
            diffs = [_median(tf[i:i + k]) - _median(tb[i:i + k]) for i in range(0, len(tf), k)]
            res["paired_overhead_ns"] = _median(diffs)
        else:
            res["paired_overhead_ns"] = None
        res["baseline_median_ns"] = _median(res["baseline_times_ns"])
        res["overhead_ns"] = (res["median_ns"] - res["baseline_median_ns"]
                              if res["median_ns"] is not None and res["baseline_median_ns"] is not None else None)

    for g in ("mlp64", "mlp512", "gpt2", "gpt2s"):
        pre = meta.get(f"{g}_bare_preimport_ns")
        post = _median([t for n, r in results.items() if C.CASES[n].baseline == f"{g}_bare"
                        for t in r["baseline_times_ns"]] or results.get(f"{g}_bare", {}).get("times_ns", []))
        if pre and post:
            meta[f"{g}_bare_after_vs_before_import"] = round(post / pre, 3)

    if args.json:
        json.dump({"meta": meta, "cases": results}, sys.stdout)
        print()
    else:
        print(f"nnsight {meta.get('nnsight_version')} at {meta.get('nnsight_file')}; torch {meta['torch']}")
        for name, r in results.items():
            if r["error"]:
                print(f"{name:22s} ERROR {r['error'].splitlines()[0]}")
                continue
            us = lambda v: "-" if v is None else f"{v / 1e3:10.1f}"  # noqa: E731
            print(f"{name:22s} median {us(r['median_ns'])} us  baseline {us(r['baseline_median_ns'])} us  "
                  f"overhead {us(r['overhead_ns'])} us  paired {us(r['paired_overhead_ns'])} us  (n={len(r['times_ns'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
