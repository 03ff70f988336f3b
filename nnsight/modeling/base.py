"""``NNsight(module)``: wrap any ``torch.nn.Module`` for tracing."""
from typing import Any, Dict, List, Optional, Tuple

import weakref

import torch

from .. import aliasing
from ..batching import Batchable
from ..envoy import TREE_VERSION, Envoy
from ..tracing.editing import EditingMixin
from ..tracing.generation import MethodDelegationMixin
from ..tracing.interleaving import InterleavingTracer
from ..tracing.iteration import end_steps
from ..tracing.session import SessionMixin


class NNsight(MethodDelegationMixin, EditingMixin, SessionMixin, Envoy, Batchable):
    """The root envoy of a model: adds ``trace`` and the batching hooks.

    Subclasses customise how inputs become a batch through
    ``_prepare_input`` / ``_batch`` and how the model runs
    through ``_execute``.
    """

    def __init__(self, module: torch.nn.Module, rename: Optional[aliasing.Rename] = None,
                 envoys: Optional[Dict[Any, type]] = None) -> None:
        super().__init__(module, path="model", envoys=envoys)
        self.__dict__["_patch_cache"] = None
        self.__dict__["_alias"] = aliasing.bind(self, rename)  # `rename=` aliases
        # The interleaver's cached forward wrappers refer back to it: drop them with the model,
        # so the interleaver is freed as soon as the model is, without waiting for the gc.
        forget = getattr(self._interleaver, "forget_wrappers", None)
        if forget is not None:
            weakref.finalize(self, forget())

    # ---------------------------------------------------------------- tracing

    def trace(self, *inputs, trace: bool = True, **kwargs) -> InterleavingTracer:
        """``with model.trace(input):`` — run the model once with interventions.

        ``model.trace(input, trace=False)`` (nnsight 0.8) runs the model on the input right away,
        with no with-block, and returns the model's output.
        """
        tracer = InterleavingTracer(self, *inputs, **kwargs)
        return tracer if trace else tracer.run_without_body()

    def scan(self, *inputs, **kwargs):
        """``with model.scan(input):`` — run on fake tensors: shapes without computation."""
        from ..tracing.scan import ScanningTracer

        return ScanningTracer(self, *inputs, **kwargs)

    def _patch_list(self) -> List[Tuple[str, torch.nn.Module]]:
        """Every ``(path, module)`` of the tree: the providers an execution offers."""
        cache = self._patch_cache
        if cache is None or self.__dict__.get("_patch_version") != TREE_VERSION[0]:
            self.__dict__["_patch_version"] = TREE_VERSION[0]
            cache = [(path, envoy._module) for path, envoy in self.named_modules()]
            self.__dict__["_patch_cache"] = cache
        return cache

    def _update(self, module: torch.nn.Module) -> None:
        super()._update(module)
        self.__dict__["_patch_cache"] = None
        if self.__dict__.get("_alias") is not None:
            self._alias.build(self)

    def _ensure_dispatched(self) -> None:
        """Load real weights before the first execution (meta-loaded models override this)."""

    # --------------------------------------------------------------- batching

    def _split_inputs(self, args: tuple, kwargs: Dict[str, Any]) -> Tuple[Optional[Tuple[tuple, dict]], dict]:
        """Separate the trace's inputs (which make an implicit invoke) from call options."""
        if args or kwargs:
            return (args, kwargs), {}
        return None, {}

    def _prepare_input(self, *args, **kwargs) -> Tuple[tuple, dict, int]:
        """Normalize one invoke's input; returns ``(args, kwargs, batch_size)``."""
        for value in list(args) + list(kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return args, kwargs, int(value.shape[0])
        return args, kwargs, 1 if (args or kwargs) else 0

    def _batch(self, batched: Tuple[tuple, dict], *args, **kwargs) -> Tuple[tuple, dict]:
        """Combine a new invoke's prepared input with the batch so far (tensors: concatenated on dim 0)."""
        b_args, b_kwargs = batched

        def cat(a, b, where):
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape[1:] == b.shape[1:]:
                return torch.cat([a, b], dim=0)
            if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and _equal(a, b):
                return a  # an option every invoke gives the same value (`flag=True`)
            raise NotImplementedError(
                f"{type(self).__name__} can't batch the inputs of several invokes ({where} is "
                f"{type(a).__name__}). Use one input invoke plus empty invokes, or implement "
                f"`_prepare_input` and `_batch` on a subclass.")

        if len(b_args) != len(args) or set(b_kwargs) != set(kwargs):
            raise NotImplementedError(
                f"{type(self).__name__} can't batch invokes whose inputs have different structure.")
        new_args = tuple(cat(a, b, f"argument {i}") for i, (a, b) in enumerate(zip(b_args, args)))
        new_kwargs = {k: cat(b_kwargs[k], kwargs[k], f"keyword {k!r}") for k in kwargs}
        return new_args, new_kwargs

    def _execute(self, *args, **kwargs) -> Any:
        output = self._module(*args, **kwargs)
        end_steps(self._interleaver)  # unbounded tracer.iter loops end with the run
        return output


def _equal(a: Any, b: Any) -> bool:
    """Are two non-tensor invoke arguments the same option? (False where == doesn't say)"""
    try:
        return a is b or bool(a == b)
    except Exception:
        return False
