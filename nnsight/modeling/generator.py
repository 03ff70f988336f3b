"""Generation support for language models: ``model.generator`` and its streamer.

``with model.generate(...) as tracer:`` calls ``__nnsight_generate__``, which
runs Hugging Face ``generate`` with

* ``model.generator.streamer`` as the streamer: HF hands it every step's new
  tokens, and each step's tokens pass through the streamer module, so
  ``model.generator.streamer.output`` at step k is the ids chosen at step k
  (the prompt, which HF streams first, is not a step and is not offered); a
  streamer passed by the user still receives everything;
* ``model.generator`` called once on the final ids, so
  ``model.generator.output`` is the generated sequences (read at iteration 0
  whatever the step cursor; ``tracer.result`` is the same value).

With ``num_return_sequences > 1`` or beam search HF decodes k = max(num_beams,
num_return_sequences) rows per prompt and returns num_return_sequences: the invokes' batch groups
are scaled to match (``_rescale``), so each invoke sees and writes its own prompts' rows.

The number of steps is known before the run: ``max_new_tokens`` (call or
generation config), else ``max_length`` minus the prompt length (transformers 5 default:
20 new tokens). Unbounded
``tracer.iter[:]`` / ``tracer.all()`` loops end after that many steps.
"""
from typing import Any, Optional

import torch

from ..envoy import Envoy
from ..tracing.iteration import end_steps, request_at, swap_at


class WrapperModule(torch.nn.Module):
    """A module that returns its input: a provider for values that no real module produces."""

    def forward(self, *args, **kwargs) -> Any:
        if kwargs:
            return args, kwargs
        return args[0] if len(args) == 1 else args


class Streamer(WrapperModule):
    """HF streamer protocol (``put`` / ``end``) routed through a module, one call per step."""

    def __init__(self) -> None:
        super().__init__()
        self._user = None
        self._prompt = True

    def begin(self, user_streamer=None) -> "Streamer":
        self._user = user_streamer
        self._prompt = True
        return self

    def put(self, value: Any) -> None:
        if self._prompt:  # HF streams the prompt first: not a generation step
            self._prompt = False
        else:
            value = self(value)
        if self._user is not None:
            self._user.put(value)

    def end(self) -> None:
        user, self._user = self._user, None
        if user is not None:
            user.end()


class Generator(WrapperModule):
    """Called once with the generated ids; owns the streamer."""

    def __init__(self) -> None:
        super().__init__()
        self.streamer = Streamer()


class OnceEnvoy(Envoy):
    """Envoy of a module called once per run: its values are read at iteration 0."""

    @property
    def output(self) -> Any:
        mediator = self._mediator()
        if mediator is not None:
            return request_at(mediator, self._output_key, 0)
        return Envoy.output.fget(self)

    @output.setter
    def output(self, value: Any) -> None:
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot set the output of `{self.path}` outside of a trace.")
        swap_at(mediator, self._output_key, 0, value)


class GenerationMixin:
    """``model.generate(...)`` as a tracing context for Hugging Face causal LMs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Not a submodule of the HF model (its state dict stays untouched): only an envoy child.
        self._children["generator"] = OnceEnvoy(Generator(), f"{self.path}.generator", self._interleaver)
        self.__dict__["_patch_cache"] = None

    def __nnsight_generate__(self, *args, **kwargs) -> Any:
        generator = self._children["generator"]
        streamer: Streamer = generator._module.streamer
        user_streamer = kwargs.pop("streamer", None)
        config = kwargs.get("generation_config") or getattr(self._module, "generation_config", None)
        beams = _option(kwargs, config, "num_beams")
        returned = _option(kwargs, config, "num_return_sequences")
        if beams == 1:  # HF refuses streamers with beam search
            kwargs["streamer"] = streamer.begin(user_streamer)
        elif user_streamer is not None:
            kwargs["streamer"] = user_streamer
        interleaver = self._interleaver
        # HF runs every prompt as max(num_beams, num_return_sequences) rows while decoding and
        # returns num_return_sequences rows per prompt: each invoke gets its prompts' rows of both.
        expand = max(beams, returned) if interleaver.active else 1
        _rescale(interleaver, 1, expand)
        try:
            output = self._module.generate(*args, **kwargs)
        finally:
            streamer.begin(None)
        end_steps(interleaver)  # before the generator's output, so code after a loop can read it
        _rescale(interleaver, expand, returned)
        return generator(output, hook=True)

    def _iteration_steps(self, name: str, kwargs: dict) -> Optional[int]:
        if name != "generate":
            return super()._iteration_steps(name, kwargs)
        config = kwargs.get("generation_config") or getattr(self._module, "generation_config", None)
        steps = kwargs.get("max_new_tokens")
        if steps is None:
            steps = getattr(config, "max_new_tokens", None)
        if steps is None:
            prompt = kwargs.get("input_ids")
            if prompt is None:
                prompt = kwargs.get("inputs_embeds")
            if prompt is None:
                return None
            length = int(prompt.shape[1])
            max_length = kwargs.get("max_length")
            if max_length is None:
                max_length = getattr(config, "max_length", None)
            if max_length is None:  # transformers 5: 20 new tokens, within the position limit
                limit = getattr(getattr(self._module, "config", None), "max_position_embeddings", None)
                max_length = length + 20 if limit is None else min(length + 20, limit)
            steps = max_length - length
        return max(int(steps), 0)


def _option(kwargs: dict, config: Any, name: str) -> int:
    """A generation option as HF resolves it: the call's keyword, else the generation config, else 1."""
    value = kwargs.get(name)
    if value is None:
        value = getattr(config, name, None)
    return int(value or 1)


def _rescale(interleaver, old: int, new: int) -> None:
    """Batch groups counted in ``old`` rows per prompt → ``new`` rows per prompt.

    An invoke with prompts ``(start, size)`` owns rows ``(start * k, size * k)`` of a batch HF
    expanded to ``k`` rows per prompt (``repeat_interleave``: a prompt's rows are contiguous, and
    beam search keeps each prompt's beams in its own block). The mediators' groups, the caches'
    groups and the batcher's total change together; they stay scaled to the end of the trace
    (the mediators and caches are the trace's own).
    """
    if old == new or not interleaver.active:
        return

    def scale(group):
        return None if group is None else (group[0] // old * new, group[1] // old * new)

    for mediator in interleaver.mediators:
        mediator.batch_group = scale(mediator.batch_group)
    interleaver.caches[:] = [(cache, scale(group)) for cache, group in interleaver.caches]
    interleaver.batcher.total = interleaver.batcher.total // old * new
