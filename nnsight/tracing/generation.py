"""``with model.generate(...)`` (and any other method of the model) as a tracing context.

Accessing a method of the wrapped module through the model
(``model.generate``) gives a function that traces when its call opens a
with-statement and simply calls the method otherwise::

    with model.generate("Hello", max_new_tokens=5) as tracer:   # traced
        ...
    tokens = model.generate("Hello", max_new_tokens=5)          # plain call

Whether the call opens a ``with`` is read from the caller's bytecode (the
instruction after the call is ``BEFORE_WITH`` / ``SETUP_WITH``), once per call
site. A model class can customise the traced call with
``__nnsight_<method>__``: ``LanguageModel.__nnsight_generate__``
streams tokens through ``model.generator`` and returns the generated ids.
"""
import dis
import functools
import sys
import types
from typing import Any, Dict, Optional, Tuple

from compiler.fallbacks import FALLBACKS
from runtime import registries

from .interleaving import InterleavingTracer
from .iteration import end_steps, ensure_root_patched

_WITH_OPS = frozenset({"BEFORE_WITH", "SETUP_WITH", "BEFORE_ASYNC_WITH", "SETUP_ASYNC_WITH"})
_opens_with: Dict[Tuple[int, int], Tuple[Any, bool]] = {}  # (id(code), lasti) -> (code, opens)
_instructions: Dict[Any, list] = {}


def opens_with(frame) -> bool:
    """Does the call ``frame`` is executing produce the context manager of a with-statement?"""
    code, lasti = frame.f_code, frame.f_lasti
    key = (id(code), lasti)  # by id: hashing a code object is expensive and uncached
    entry = _opens_with.get(key)
    hit = entry[1] if entry is not None and entry[0] is code else None
    if hit is None:
        hit = _next_opens_with(code, lasti)
    if hit is None:
        FALLBACKS.note("generation.bytecode", f"{code.co_filename}:{code.co_firstlineno} offset {lasti}")
        instructions = _instructions.get(code)
        if instructions is None:
            if len(_instructions) >= 256:  # (only on the rare fallback path; bounded all the same)
                _instructions.clear()
            instructions = _instructions[code] = list(dis.get_instructions(code))
        hit = False
        # f_lasti is the call (3.12+) or one of its inline cache entries (3.11): the next real
        # instruction after it opens the with-statement, if any.
        for inst in instructions:
            if inst.offset > lasti and inst.opname not in ("CACHE", "EXTENDED_ARG"):
                hit = inst.opname in _WITH_OPS
                break
    if entry is None or entry[0] is not code:
        if len(_opens_with) > 4096:
            _opens_with.clear()
        _opens_with[key] = (code, hit)
    return hit


_CACHE_OP = dis.opmap.get("CACHE", -1)
_SKIPPED_OPS = {dis.opmap["EXTENDED_ARG"], _CACHE_OP}


def _next_opens_with(code, lasti: int) -> Optional[bool]:
    """The same answer from the raw bytecode, without disassembling the function; None if unsure."""
    co = code.co_code
    i = lasti + 2
    while i < len(co) and co[i] in _SKIPPED_OPS:
        i += 2
    if i >= len(co) or sys.version_info >= (3, 14):
        return None
    return dis.opname[co[i]] in _WITH_OPS


class MethodTracer(InterleavingTracer):
    """Trace of one call of a model method (``generate``, ...), interleaved with the body."""

    def __init__(self, model, name: str, method, *args, **kwargs) -> None:
        super().__init__(model, *args, **kwargs)
        self._method_name = name
        self._method = method

    def _interleave(self, mediators, total: int, args: tuple, kwargs: dict) -> Any:
        self._steps = self.model._iteration_steps(self._method_name, kwargs)
        return super()._interleave(mediators, total, args, kwargs)

    def _call_model(self, args: tuple, kwargs: dict) -> Any:
        model = self.model
        ensure_root_patched(model)  # step boundaries (tracer.iter / tracer.all())
        special = getattr(model, f"__nnsight_{self._method_name}__", None)
        if special is not None:
            return special(*args, **kwargs)
        # Looked up again: dispatching a meta-loaded model replaced the module the method was bound to.
        output = getattr(model._module, self._method_name)(*args, **kwargs)
        end_steps(model._interleaver)
        return output


class GenerationTracer(MethodTracer):
    """``with model.generate(...) as tracer:`` — one generation, every step interleaved."""


class MethodDelegationMixin:
    """Root-model ``__getattr__``: methods of the wrapped module trace inside a with-statement."""

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        if type(value) is types.MethodType and not name.startswith("_") \
                and value.__self__ is self.__dict__.get("_module"):
            return _delegate(self, name, value)
        return value

    def _method_tracer(self, name: str, method, args: tuple, kwargs: dict) -> MethodTracer:
        cls = GenerationTracer if name == "generate" else MethodTracer
        return cls(self, name, method, *args, **kwargs)

    def _method_call(self, name: str, method, args: tuple, kwargs: dict) -> Any:
        """A plain call (no with-statement): no interleaving; inputs are prepared like a trace's."""
        special = getattr(self, f"__nnsight_{name}__", None)
        if special is None:
            return method(*args, **kwargs)
        self._ensure_dispatched()
        inputs, config = self._split_inputs(args, kwargs)
        if inputs is None:
            return special(**config)
        p_args, p_kwargs, _ = self._prepare_input(*inputs[0], **inputs[1])
        return special(*p_args, **{**p_kwargs, **config})

    def _iteration_steps(self, name: str, kwargs: dict):
        """How many steps a traced call of method ``name`` runs, if known (None: unknown)."""
        return None


def _delegate(model, name: str, method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        if opens_with(sys._getframe(1)):
            return model._method_tracer(name, method, args, kwargs)
        return model._method_call(name, method, args, kwargs)

    return call


registries.track("nnsight.tracing.generation.with_sites", lambda: len(_opens_with), 4097)
registries.track("nnsight.tracing.generation.disassembled", lambda: len(_instructions), 256)
