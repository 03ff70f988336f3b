"""``model.pipe(...)``: run the model's ``transformers.pipeline`` with interventions.

    with model.pipe("The Eiffel Tower is in", max_new_tokens=3) as tracer:
        hidden = model.transformer.h[0].output.save()
        text = tracer.result.save()          # the pipeline's own output: [{'generated_text': ...}]

The inputs go to the pipeline as they are (its tokenizer or processor prepares them, its
postprocessing decodes the result); keyword arguments are the pipeline call's options. Invokes
each add their raw inputs; the pipeline then runs them as one batch, in invoke order, so each
invoke's interventions see its own rows. Without a ``with`` statement, ``model.pipe(x)`` simply
returns the pipeline's output.
"""
import sys
from typing import Any, Dict, List, Tuple

from ..tracing.generation import MethodTracer, opens_with
from ..tracing.invoker import Invoker
from ..tracing.iteration import end_steps


class PipeInput:
    """The raw inputs of a pipe's invokes; one pipeline batch row per string, image, ..."""

    def __init__(self, items: List[Any], single: bool) -> None:
        self.items = items
        self.single = single  # one non-list input: the pipeline returns that input's result unwrapped

    @classmethod
    def of(cls, args: tuple, kwargs: Dict[str, Any]) -> "PipeInput":
        if kwargs:
            raise TypeError(
                f"An invoke of `model.pipe(...)` takes only the pipeline's input; pass options "
                f"({', '.join(sorted(kwargs))}) to `model.pipe(input, **options)`.")
        if len(args) != 1:
            raise TypeError(f"`model.pipe` takes one input per invoke (a string or a list), got {len(args)}.")
        value = args[0]
        if isinstance(value, (list, tuple)):
            return cls(list(value), single=False)
        return cls([value], single=True)

    def merged(self, other: "PipeInput") -> "PipeInput":
        return PipeInput(self.items + other.items, single=False)

    def value(self) -> Any:
        return self.items[0] if self.single else list(self.items)


class PipeTracer(MethodTracer):
    """``with model.pipe(...)``: one pipeline call, interleaved with the body."""

    def __init__(self, model, *args, **kwargs) -> None:
        # Always a PipeInput (empty without input: it adds no rows), so every keyword is a pipeline
        # option, never a tokenizer's or the model's.
        raw = PipeInput.of(args, {}) if args else PipeInput([], single=False)
        super().__init__(model, "pipe", model.pipe, raw, **kwargs)

    def invoke(self, *args, **kwargs) -> Invoker:
        return Invoker(self, (PipeInput.of(args, kwargs),) if args or kwargs else (), {})


class PipelineMixin:
    """``pipe`` for a Hugging Face model with a pipeline ``task``; put it before the input handling."""

    def pipe(self, *inputs, **options) -> Any:
        """``with model.pipe(x, **options) as tracer:`` traces a pipeline call (``tracer.result`` is its
        output); a plain ``model.pipe(x)`` returns the pipeline's output."""
        if opens_with(sys._getframe(1)):
            return PipeTracer(self, *inputs, **options)
        return self.pipeline(*inputs, **options)

    @property
    def pipeline(self):
        """The task's ``transformers.pipeline`` over the wrapped model (built once per loaded module)."""
        self._ensure_dispatched()
        cached = self.__dict__.get("_pipeline_cache")
        if cached is None or cached[0] is not self._module:
            cached = (self._module, self._build_pipeline())
            self.__dict__["_pipeline_cache"] = cached
        return cached[1]

    def _build_pipeline(self):
        task = self.task
        if task is None:
            raise ValueError(
                f"{type(self).__name__} has no pipeline task, so `pipe` has no pipeline to run: pass "
                f"`task=` (e.g. 'text-generation', 'fill-mask', 'text-classification') when loading.")
        import transformers

        parts = {k: self.__dict__.get(k) for k in ("tokenizer", "processor", "image_processor", "feature_extractor")}
        return transformers.pipeline(task, model=self._module, **{k: v for k, v in parts.items() if v is not None})

    def __nnsight_pipe__(self, raw: "PipeInput", **options) -> Any:
        options.setdefault("batch_size", len(raw.items))  # one batch: rows in invoke order
        output = self.pipeline(raw.value(), **options)
        end_steps(self._interleaver)
        return output

    # ---------------------------------------------------- raw inputs pass through

    def _split_inputs(self, args: tuple, kwargs: Dict[str, Any]):
        if args and isinstance(args[0], PipeInput):
            return (args, {}), kwargs
        return super()._split_inputs(args, kwargs)

    def _prepare_input(self, *inputs, **kwargs) -> Tuple[tuple, dict, int]:
        if inputs and isinstance(inputs[0], PipeInput):
            return inputs, {}, len(inputs[0].items)
        return super()._prepare_input(*inputs, **kwargs)

    def _batch(self, batched: Tuple[tuple, dict], *args, **kwargs) -> Tuple[tuple, dict]:
        if args and isinstance(args[0], PipeInput) and batched[0] and isinstance(batched[0][0], PipeInput):
            return (batched[0][0].merged(args[0]),), {}
        return super()._batch(batched, *args, **kwargs)
