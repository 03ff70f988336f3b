"""Benchmark cases: the same code runs under our `nnsight` and under the peer (PyPI nnsight 0.8.1).

Only the public nnsight API is used: `nnsight.NNsight`, `nnsight.LanguageModel(path,
dispatch=True)`, `.trace()`, `.invoke()`, `.generate()`, `.output`, `.save()`, `tracer.iter[:]`,
`model.generator.output`. Every trace body lives in this file at module level, so both packages
see real source text (the peer reads the source of a `with` block; ours compiles it).

A case is a `Case(name, group, make, baseline, target, ...)`; `make(ctx)` returns the callable
to time. `baseline` names the case whose time is subtracted to get the overhead (the bare
forward of the same model and batch). Cases of one group share one `Context` (models built once
per process).

Models
  * MLP-H (H = 64, 512): `torch.nn.Sequential` of 12 blocks, each `Sequential(Linear(H, H), ReLU())`,
    `torch.manual_seed(0)`, eval mode, input `randn(1, H)`. `model[i]` is block i.
    The bare forward runs an *unwrapped* copy with the same weights, so a package that leaves
    permanent hooks on the wrapped module cannot hide their cost in the baseline.
  * Tiny GPT-2: `benchmarks/tiny_gpt2.gpt2_path()` (the repo's `nnsight/testing/tiny_models.py`
    loaded by file path, or a local fallback). Bare forward / plain generate use
    `AutoModelForCausalLM.from_pretrained(path)` directly.
No `torch.no_grad()` / `inference_mode()` anywhere: grad mode is the default for both packages.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

N_BLOCKS = 12
GPT2_PROMPT = "The Eiffel Tower is in the city of"
GEN_TOKENS = 10


# ----------------------------------------------------------------------------- models


def build_mlp(hidden: int):
    import torch

    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU()) for _ in range(N_BLOCKS)]
    return torch.nn.Sequential(*blocks).eval()


class Context:
    """Per-process, per-group state: models and inputs, built once.

    `Context(group)` builds only the plain-torch parts (no nnsight import), so the bare forward
    can be timed before `import nnsight`; `wrap()` then imports nnsight and wraps the model.
    """

    def __init__(self, group: str):
        import torch

        self.group = group
        self.extra: Dict[str, Any] = {}
        self.model = None
        if group.startswith("mlp"):
            self.hidden = int(group[3:])
            self.raw = build_mlp(self.hidden)
            torch.manual_seed(1)
            self.x = torch.randn(1, self.hidden)
            self.x2 = torch.cat([self.x, self.x])  # what two invokes of x batch into
            self.bare = lambda: self.raw(self.x)
        elif group in ("gpt2", "gpt2s"):
            import warnings

            from transformers import AutoModelForCausalLM, AutoTokenizer
            from gpt2_small import gpt2_small_path
            from tiny_gpt2 import gpt2_path

            warnings.filterwarnings("ignore")
            self.path = gpt2_path() if group == "gpt2" else gpt2_small_path()
            self.hf = AutoModelForCausalLM.from_pretrained(self.path).eval()
            tok = AutoTokenizer.from_pretrained(self.path)
            self.ids = tok(GPT2_PROMPT, return_tensors="pt").input_ids
            self.mask = torch.ones_like(self.ids)
            self.ids2 = torch.cat([self.ids, self.ids])
            self.mask2 = torch.ones_like(self.ids2)
            self.extra[f"{group}_path"] = self.path
            self.extra["prompt_ids"] = self.ids[0].tolist()
            self.bare = lambda: self.hf(input_ids=self.ids, attention_mask=self.mask)
        else:
            raise ValueError(group)

    def wrap(self) -> "Context":
        if self.model is None:
            import nnsight

            if self.group.startswith("mlp"):
                self.model = nnsight.NNsight(copy.deepcopy(self.raw))
            else:
                self.model = nnsight.LanguageModel(self.path, dispatch=True)
        return self


# ----------------------------------------------------------------------------- MLP trace bodies


def mlp_empty(model, x):
    with model.trace(x):
        pass


def mlp_save1(model, x):
    with model.trace(x):
        out = model[5].output.save()
    return out


def mlp_save12(model, x):
    with model.trace(x):
        o0 = model[0].output.save()
        o1 = model[1].output.save()
        o2 = model[2].output.save()
        o3 = model[3].output.save()
        o4 = model[4].output.save()
        o5 = model[5].output.save()
        o6 = model[6].output.save()
        o7 = model[7].output.save()
        o8 = model[8].output.save()
        o9 = model[9].output.save()
        o10 = model[10].output.save()
        o11 = model[11].output.save()
    return [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11]


def mlp_save2(model, x):
    with model.trace(x):
        o0 = model[0].output.save()
        o6 = model[6].output.save()
    return [o0, o6]


def mlp_save4(model, x):
    with model.trace(x):
        o0 = model[0].output.save()
        o3 = model[3].output.save()
        o6 = model[6].output.save()
        o9 = model[9].output.save()
    return [o0, o3, o6, o9]


def mlp_save8(model, x):
    with model.trace(x):
        o0 = model[0].output.save()
        o1 = model[1].output.save()
        o3 = model[3].output.save()
        o4 = model[4].output.save()
        o6 = model[6].output.save()
        o7 = model[7].output.save()
        o9 = model[9].output.save()
        o10 = model[10].output.save()
    return [o0, o1, o3, o4, o6, o7, o9, o10]


SWEEP = {0: mlp_empty, 1: mlp_save1, 2: mlp_save2, 4: mlp_save4, 8: mlp_save8, 12: mlp_save12}
SWEEP_BLOCKS = {1: [5], 2: [0, 6], 4: [0, 3, 6, 9], 8: [0, 1, 3, 4, 6, 7, 9, 10], 12: list(range(N_BLOCKS))}


def mlp_write_save(model, x):
    with model.trace(x):
        model[0].output[:] = 0
        out = model[11].output.save()
    return out


def mlp_invoke2(model, x):
    with model.trace() as tr:
        with tr.invoke(x):
            a = model[5].output.save()
        with tr.invoke(x):
            b = model[5].output.save()
    return a, b


# ----------------------------------------------------------------------------- GPT-2 trace bodies


def gpt2_save1(model, ids):
    with model.trace(ids):
        out = model.transformer.h[0].output.save()
    return out


def gpt2_save12(model, ids):
    with model.trace(ids):
        o0 = model.transformer.h[0].output.save()
        o1 = model.transformer.h[1].output.save()
        o2 = model.transformer.h[2].output.save()
        o3 = model.transformer.h[3].output.save()
        o4 = model.transformer.h[4].output.save()
        o5 = model.transformer.h[5].output.save()
        o6 = model.transformer.h[6].output.save()
        o7 = model.transformer.h[7].output.save()
        o8 = model.transformer.h[8].output.save()
        o9 = model.transformer.h[9].output.save()
        o10 = model.transformer.h[10].output.save()
        o11 = model.transformer.h[11].output.save()
    return [o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11]


def gpt2_invoke2(model, ids):
    with model.trace() as tr:
        with tr.invoke(ids):
            a = model.transformer.h[0].output.save()
        with tr.invoke(ids):
            b = model.transformer.h[0].output.save()
    return a, b


def gpt2_generate_loop(model, ids):
    with model.generate(ids, max_new_tokens=10, do_sample=False) as tracer:
        hs = list().save()
        for step in tracer.iter[:]:
            hs.append(model.transformer.h[0].output)
    return hs


def gpt2_generate_tokens(model, ids):
    # Untimed: the tokens nnsight's generate produced (code after an unbounded
    # `tracer.iter[:]` loop does not run, so this is a separate trace).
    with model.generate(ids, max_new_tokens=10, do_sample=False):
        out = model.generator.output.save()
    return out


def gpt2_remote_local(model, ids):
    with model.trace(ids, remote="local"):
        out = model.transformer.h[0].output.save()
    return out


# ----------------------------------------------------------------------------- case table


@dataclasses.dataclass
class Case:
    """One row of the report.

    ``kind`` says what ``target`` bounds (see compare.py / verdict.py):
      * ``peer``: ours overhead / the peer's overhead <= target (the default);
      * ``self``: ours overhead / ours bare forward <= target (a fraction: 0.02 = 2 %);
      * ``vs``: ours overhead / ours overhead of case ``versus`` <= target;
      * ``abs``: the number ``extra[metric]`` of our worker <= target (``>=`` when ``at_least``).
    """
    name: str
    group: str  # shares a Context / worker: mlp64, mlp512, gpt2, gpt2s; or special: cold, import, mem, vllm
    make: Optional[Callable[[Context], Callable[[], Any]]]
    baseline: Optional[str] = None  # case subtracted to get the overhead
    target: Optional[float] = None  # None = reported only
    repeat: int = 600
    warmup: int = 50
    note: str = ""
    aux: bool = False  # a baseline only: measured inside other cases, run alone only by name
    kind: str = "peer"
    versus: Optional[str] = None  # kind "vs": the case whose overhead is the denominator
    metric: Optional[str] = None  # kind "abs": the key in the worker's extra
    at_least: bool = False  # kind "abs": the target is a minimum
    derived: bool = False  # computed from other cases' results; no worker runs it
    sets: tuple = ()  # extra names under which `--cases` selects it (besides its group)
    needs: tuple = ()  # cases it is computed from (run with it)


def _hooks(ctx: Context, persistent: bool, blocks=None):
    store = []
    net = copy.deepcopy(ctx.raw)  # never touch ctx.raw: it is the bare-forward baseline
    chosen = [net[i] for i in (range(len(net)) if blocks is None else blocks)]

    def hook(_mod, _inp, out):
        store.append(out)

    if persistent:
        for blk in chosen:
            blk.register_forward_hook(hook)

        def run():
            store.clear()
            net(ctx.x)
            return list(store)

        return run

    def run_reg():
        store.clear()
        handles = [blk.register_forward_hook(hook) for blk in chosen]
        net(ctx.x)
        for h in handles:
            h.remove()
        return list(store)

    return run_reg


def _check_generate(ctx: Context) -> None:
    """Untimed correctness checks for the generate case, stored in ctx.extra."""
    hs = gpt2_generate_loop(ctx.model, ctx.ids)
    ctx.extra["generate_steps_saved"] = len(hs)
    ours = gpt2_generate_tokens(ctx.model, ctx.ids)
    hf = ctx.hf.generate(input_ids=ctx.ids, attention_mask=ctx.mask, max_new_tokens=GEN_TOKENS, do_sample=False)
    ours_l = ours.tolist() if hasattr(ours, "tolist") else list(ours)
    ctx.extra["generate_tokens"] = ours_l
    ctx.extra["hf_generate_tokens"] = hf.tolist()
    ctx.extra["generate_tokens_equal"] = ours_l == hf.tolist()


def _mlp_cases(h: int) -> list:
    g = f"mlp{h}"
    tgt = 0.3 if h == 64 else None
    rep = 600 if h == 64 else 300
    bare = f"{g}_bare"
    cases = [
        Case(bare, g, lambda c: (lambda: c.raw(c.x)), note="unwrapped torch forward", aux=True),
        Case(f"{g}_bare2", g, lambda c: (lambda: c.raw(c.x2)), note="batch-2 forward (baseline of invoke2)", aux=True),
        Case(f"{g}_empty", g, lambda c: (lambda: mlp_empty(c.model, c.x)), bare, tgt, rep, sets=(f"{g}sweep",)),
        Case(f"{g}_save1", g, lambda c: (lambda: mlp_save1(c.model, c.x)), bare, tgt, rep, sets=(f"{g}sweep",)),
        Case(f"{g}_save12", g, lambda c: (lambda: mlp_save12(c.model, c.x)), bare, tgt, rep, sets=(f"{g}sweep",)),
        Case(f"{g}_write_save", g, lambda c: (lambda: mlp_write_save(c.model, c.x)), bare, None, rep),
        Case(f"{g}_invoke2", g, lambda c: (lambda: mlp_invoke2(c.model, c.x)), f"{g}_bare2", None, rep),
        Case(f"{g}_hooks12", g, lambda c: _hooks(c, True), bare, repeat=rep, note="torch hooks, registered once (floor)"),
        Case(f"{g}_hooks12_reg", g, lambda c: _hooks(c, False), bare, repeat=rep,
             note="torch hooks, registered per call", sets=(f"{g}sweep",)),
    ]
    if h == 64:
        cases.append(Case(f"{g}_save12_vs_hooks", g, None, target=1.5, kind="vs", derived=True,
                          needs=(f"{g}_save12", f"{g}_hooks12_reg"),
                          note="12 saves: ours overhead / torch hooks registered per call (same interpreter)"))
        # The sweep behind the overhead-against-saves plot (--plots): 2, 4 and 8 saves, and raw
        # hooks on the same blocks registered per call (12 saves / 12 hooks are above).
        for n in (2, 4, 8):
            body = SWEEP[n]
            cases.append(Case(f"{g}_save{n}", g, (lambda b: lambda c: (lambda: b(c.model, c.x)))(body), bare,
                              repeat=rep // 2, sets=(f"{g}sweep",), aux=True, note=f"{n} saves (plot)"))
        for n in (1, 2, 4, 8):
            cases.append(Case(f"{g}_hooks{n}_reg", g, (lambda bl: lambda c: _hooks(c, False, bl))(SWEEP_BLOCKS[n]),
                              bare, repeat=rep // 2, sets=(f"{g}sweep",), aux=True,
                              note=f"torch hooks on {n} blocks, registered per call (plot)"))
    return cases


def _gen_case(c: Context):
    _check_generate(c)
    return lambda: gpt2_generate_loop(c.model, c.ids)


CASES: Dict[str, Case] = {}
for _c in (
    _mlp_cases(64)
    + _mlp_cases(512)
    + [
        Case("gpt2_bare", "gpt2", lambda c: (lambda: c.hf(input_ids=c.ids, attention_mask=c.mask)), repeat=200, warmup=20, aux=True),
        Case("gpt2_bare2", "gpt2", lambda c: (lambda: c.hf(input_ids=c.ids2, attention_mask=c.mask2)),
             repeat=200, warmup=20, note="batch-2 forward (baseline of invoke2)", aux=True),
        Case("gpt2_save1", "gpt2", lambda c: (lambda: gpt2_save1(c.model, c.ids)), "gpt2_bare", 0.4, 200, 20),
        Case("gpt2_invoke2", "gpt2", lambda c: (lambda: gpt2_invoke2(c.model, c.ids)), "gpt2_bare2", 0.4, 200, 20),
        Case("gpt2_hf_generate", "gpt2",
             lambda c: (lambda: c.hf.generate(input_ids=c.ids, attention_mask=c.mask, max_new_tokens=GEN_TOKENS, do_sample=False)),
             repeat=30, warmup=3, note="plain HF generate", aux=True),
        Case("gpt2_generate", "gpt2", _gen_case, "gpt2_hf_generate", 0.15, 30, 3,
             note="generate 10 tokens, iter[:] saving one layer per step"),
        Case("gpt2_remote_local", "gpt2", lambda c: (lambda: gpt2_remote_local(c.model, c.ids)), "gpt2_bare",
             0.5, repeat=100, warmup=10, note="trace(remote='local'), 1 save; the peer: the same call"),
        Case("gpt2s_bare", "gpt2s", lambda c: (lambda: c.hf(input_ids=c.ids, attention_mask=c.mask)),
             repeat=40, warmup=3, aux=True, note="GPT-2-small-shaped forward"),
        Case("gpt2s_save1", "gpt2s", lambda c: (lambda: gpt2_save1(c.model, c.ids)), "gpt2s_bare", 0.02, 40, 3,
             kind="self", note="GPT-2-small shape (12 x 768), 1 save: overhead / bare forward"),
        Case("gpt2s_save12", "gpt2s", lambda c: (lambda: gpt2_save12(c.model, c.ids)), "gpt2s_bare", 0.02, 40, 3,
             kind="self", note="GPT-2-small shape (12 x 768), 12 saves: overhead / bare forward"),
        Case("mem_trace12", "mem", None, None, 1.05, kind="abs", metric="peak_ratio",
             note="peak RSS of a 12-save trace / bare forward's (saved tensors subtracted), GPT-2-small shape"),
        Case("mem_generate", "mem", None, None, 1.05, kind="abs", metric="peak_ratio",
             note="peak RSS of generate 10 tokens with iter[:] / plain HF generate's (saved tensors subtracted)"),
        Case("cold_first_trace", "cold", None, "mlp64_bare", 0.6,
             note="first trace in a fresh process (MLP-64, new call site)"),
        Case("cold_new_site", "cold", None, "mlp64_bare", 0.6,
             note="first trace at a new call site, package already warm"),
        Case("import", "import", None, None, 1.0, note="python -c 'import nnsight' minus 'import torch'"),
        Case("vllm_save_per_step", "vllm", None, None, 0.8, kind="abs", metric="throughput_ratio", at_least=True,
             note="vLLM tokens/s, 16 prompts x 32 tokens, one save per step per prompt / without nnsight"),
    ]
):
    CASES[_c.name] = _c

GROUPS = {}  # group or set -> its cases (what `--cases NAME` runs; `all` = every non-aux case)
for _c in CASES.values():
    if not _c.aux:
        GROUPS.setdefault(_c.group, []).append(_c.name)
    for _s in _c.sets:
        GROUPS.setdefault(_s, []).append(_c.name)


# ----------------------------------------------------------------------------- cold call sites

COLD_TEMPLATE = '''\
def {fn}(model, x):
    with model.trace(x):
{body}
    return {ret}
'''


def expand(spec: str) -> list:
    """Case names from a comma list of cases, groups (mlp64, gpt2, cold, ...) or 'all'."""
    names = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "all":
            names += [n for n, c in CASES.items() if not c.aux]
        elif part in GROUPS:
            names += GROUPS[part]
        elif part in CASES:
            names.append(part)
        else:
            raise SystemExit(f"unknown case or group {part!r}; see `measure.py --list`")
    for n in list(names):  # a derived row brings the cases it is computed from
        names += list(CASES[n].needs)
    return list(dict.fromkeys(names))


def cold_source(seed: int, nonce: str) -> tuple:
    """A fresh trace function (new code, new file) whose shape depends only on `seed`.

    The nonce makes the text unique per sample (defeats any on-disk cache keyed by source),
    the seed makes both packages get the same mix of shapes.
    """
    import random

    rng = random.Random(seed)
    n = rng.randint(1, 3)
    layers = sorted(rng.sample(range(N_BLOCKS), n))
    lines, names = [], []
    for i, layer in enumerate(layers):
        name = f"h{i}_{nonce}"
        lines.append(f"        {name} = model[{layer}].output.save()")
        names.append(name)
    fn = f"trace_{nonce}"
    src = COLD_TEMPLATE.format(fn=fn, body="\n".join(lines), ret="[" + ", ".join(names) + "]")
    return fn, src
