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
        elif group == "gpt2":
            import warnings

            from transformers import AutoModelForCausalLM, AutoTokenizer
            from tiny_gpt2 import gpt2_path

            warnings.filterwarnings("ignore")
            self.path = gpt2_path()
            self.hf = AutoModelForCausalLM.from_pretrained(self.path).eval()
            tok = AutoTokenizer.from_pretrained(self.path)
            self.ids = tok(GPT2_PROMPT, return_tensors="pt").input_ids
            self.mask = torch.ones_like(self.ids)
            self.ids2 = torch.cat([self.ids, self.ids])
            self.mask2 = torch.ones_like(self.ids2)
            self.extra["gpt2_path"] = self.path
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
    name: str
    group: str  # shares a Context: mlp64, mlp512, gpt2; or a special kind: cold, import
    make: Optional[Callable[[Context], Callable[[], Any]]]
    baseline: Optional[str] = None  # case subtracted to get the overhead
    target: Optional[float] = None  # max ours/peer overhead ratio; None = reported only
    repeat: int = 600
    warmup: int = 50
    note: str = ""
    aux: bool = False  # a baseline only: measured inside other cases, run alone only by name


def _hooks(ctx: Context, persistent: bool):
    store = []
    net = copy.deepcopy(ctx.raw)  # never touch ctx.raw: it is the bare-forward baseline

    def hook(_mod, _inp, out):
        store.append(out)

    if persistent:
        for blk in net:
            blk.register_forward_hook(hook)

        def run():
            store.clear()
            net(ctx.x)
            return list(store)

        return run

    def run_reg():
        store.clear()
        handles = [blk.register_forward_hook(hook) for blk in net]
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
    tgt = 0.5 if h == 64 else None
    rep = 600 if h == 64 else 300
    bare = f"{g}_bare"
    return [
        Case(bare, g, lambda c: (lambda: c.raw(c.x)), note="unwrapped torch forward", aux=True),
        Case(f"{g}_bare2", g, lambda c: (lambda: c.raw(c.x2)), note="batch-2 forward (baseline of invoke2)", aux=True),
        Case(f"{g}_empty", g, lambda c: (lambda: mlp_empty(c.model, c.x)), bare, tgt, rep),
        Case(f"{g}_save1", g, lambda c: (lambda: mlp_save1(c.model, c.x)), bare, tgt, rep),
        Case(f"{g}_save12", g, lambda c: (lambda: mlp_save12(c.model, c.x)), bare, tgt, rep),
        Case(f"{g}_write_save", g, lambda c: (lambda: mlp_write_save(c.model, c.x)), bare, None, rep),
        Case(f"{g}_invoke2", g, lambda c: (lambda: mlp_invoke2(c.model, c.x)), f"{g}_bare2", None, rep),
        Case(f"{g}_hooks12", g, lambda c: _hooks(c, True), bare, repeat=rep, note="torch hooks, registered once (floor)"),
        Case(f"{g}_hooks12_reg", g, lambda c: _hooks(c, False), bare, repeat=rep, note="torch hooks, registered per call"),
    ]


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
        Case("gpt2_save1", "gpt2", lambda c: (lambda: gpt2_save1(c.model, c.ids)), "gpt2_bare", 0.7, 200, 20),
        Case("gpt2_invoke2", "gpt2", lambda c: (lambda: gpt2_invoke2(c.model, c.ids)), "gpt2_bare2", 0.7, 200, 20),
        Case("gpt2_hf_generate", "gpt2",
             lambda c: (lambda: c.hf.generate(input_ids=c.ids, attention_mask=c.mask, max_new_tokens=GEN_TOKENS, do_sample=False)),
             repeat=30, warmup=3, note="plain HF generate", aux=True),
        Case("gpt2_generate", "gpt2", _gen_case, "gpt2_hf_generate", 0.7, 30, 3,
             note="generate 10 tokens, iter[:] saving one layer per step"),
        Case("gpt2_remote_local", "gpt2", lambda c: (lambda: gpt2_remote_local(c.model, c.ids)), "gpt2_bare",
             repeat=100, warmup=10, note="trace(remote='local'), 1 save"),
        Case("cold_first_trace", "cold", None, "mlp64_bare", 1.0,
             note="first trace in a fresh process (MLP-64, new call site)"),
        Case("cold_new_site", "cold", None, "mlp64_bare", 1.0,
             note="first trace at a new call site, package already warm"),
        Case("import", "import", None, None, None, note="python -c 'import nnsight' minus 'import torch'"),
    ]
):
    CASES[_c.name] = _c

GROUPS = {}  # group -> its non-aux cases (what `--case GROUP` and `all` run)
for _c in CASES.values():
    if not _c.aux:
        GROUPS.setdefault(_c.group, []).append(_c.name)


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
