"""``DiffusionModel``: a diffusers pipeline wrapped for tracing.

``DiffusionModel(path_or_id)`` loads a pipeline (``diffusers.DiffusionPipeline``
by default, ``automodel=`` to choose another class; keyword arguments go to
``from_pretrained``). The root module, :class:`Diffuser`, holds the pipeline's
``torch.nn.Module`` components (``unet``, ``vae``, ``text_encoder``, ...) as
children, so they are envoys: ``model.unet.output``, ``model.vae.decoder.output``.

* ``with model.generate(prompt, num_inference_steps=n) as tracer:`` runs the
  whole pipeline. Each call of the denoiser (the ``unet``, or the
  ``transformer`` of DiT pipelines) is one step of ``tracer.iter[...]``; with
  classifier-free guidance that call runs the unconditional and conditional
  rows together. ``n`` is the step count, so code after ``for step in
  tracer.iter[:]`` runs on the last step. ``tracer.result`` is the pipeline's
  output (``.images``). ``seed=`` makes a ``torch.Generator`` for you.
* ``model.trace(...)`` and ``model(...)`` call the denoiser directly.
* ``model.unet.output`` (and ``model.output``) is the noise prediction tensor:
  the denoiser's ``(sample,)`` / ``UNet2DConditionOutput`` is unwrapped, and
  assigning a tensor wraps it back. In ``generate``, ``model.input`` /
  ``model.output`` are the denoiser's inputs and output at each step.
* Several invokes each bring prompts; they run as one pipeline call. Every
  invoke sees its own rows of every component, the denoiser included: under
  classifier-free guidance its rows are ``[unconditional, conditional]`` of its
  own prompts, as if it ran alone (the denoiser's batch is reordered by invoke
  for the call and put back afterwards). ``tracer.result`` in an invoke has that
  invoke's images; after the trace, the whole call's output.
* The other components' calls are not steps: their envoys read their first call
  whatever the step cursor (``model.vae.decoder.output`` after a step loop).
* ``negative_prompt=`` per invoke (``tracer.invoke("a cat", negative_prompt="blurry")``) or per
  trace (the default of prompts without their own): the pipeline gets one list matching the prompts.

See docs/features.md ("DiffusionModel") for the details.
"""
import copy
import dataclasses
import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from runtime.batcher import _rebuild
from runtime.interleaver import RESULT
from runtime.mediator import current_mediator

from ..envoy import Envoy
from ..tracing.generation import GenerationTracer
from ..tracing.iteration import end_steps, request_at
from .base import NNsight
from .generator import WrapperModule

PROMPT_KEYS = ("prompt", "prompt_embeds")
DENOISERS = ("unet", "transformer", "prior")  # the component called once per step
NEGATIVES = "_nnsight_negative_prompts"  # prepared input: each prompt's own negative prompt (or None)


class Diffuser(WrapperModule):
    """The root module: the pipeline's ``nn.Module`` components as children.

    ``forward`` calls the denoiser (``model.trace`` / ``model(...)``), ``generate``
    calls the pipeline.
    """

    def __init__(self, pipeline) -> None:
        super().__init__()
        self.__dict__["pipeline"] = pipeline  # not a module: kept out of the module tree
        components = getattr(pipeline, "components", None)
        items = components.items() if isinstance(components, dict) else vars(pipeline).items()
        for key, value in list(items):
            if isinstance(value, torch.nn.Module) and not key.startswith("_"):
                setattr(self, key, value)
        names = [n for n, _ in self.named_children()]
        self.denoiser_name = next((n for n in DENOISERS if n in names), None)

    def forward(self, *args, **kwargs) -> Any:
        if self.denoiser_name is None:
            raise TypeError(f"{type(self.pipeline).__name__} has no module component to call.")
        return getattr(self, self.denoiser_name)(*args, **kwargs)

    def generate(self, *args, **kwargs) -> Any:
        """Run the pipeline (``model.generate(...)`` outside a with-statement)."""
        return self.pipeline(*args, **kwargs)


# ----------------------------------------------------------------------------- sample outputs


def _sample(value: Any) -> Any:
    """A denoiser's ``(sample,)`` or ``...Output(sample=...)`` → the sample tensor."""
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], torch.Tensor):
        return value[0]
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("sample"), torch.Tensor):
        return value["sample"]
    return value


def _rewrap(current: Any, value: Any) -> Any:
    """``value`` in the container ``current`` came in (a full container is used as it is)."""
    if not isinstance(value, torch.Tensor) or _sample(current) is current:
        return value
    if isinstance(current, tuple):
        return (value,)
    try:
        return type(current)(sample=value)
    except Exception:
        return {"sample": value}


class SampleOutput:
    """``.output`` is the denoiser's noise prediction tensor."""

    @property
    def output(self) -> Any:
        return _sample(Envoy.output.fget(self))

    @output.setter
    def output(self, value: Any) -> None:
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot set the output of `{self.path}` outside of a trace.")
        mediator.swap(self._output_key, _rewrap(mediator.request(self._output_key), value))


class DenoiserEnvoy(SampleOutput, Envoy):
    """Envoy of the pipeline's denoiser (``model.unet``): one call per step."""

    def skip(self, value: Any) -> None:
        """Don't run the denoiser at this step; ``value`` (the noise prediction) is its output."""
        if isinstance(value, torch.Tensor) and self.__dict__.get("_pipeline_call") is not None \
                and self._pipeline_call[0]:
            value = (value,)  # pipelines call the denoiser with return_dict=False
        super().skip(value)


class ComponentEnvoy(Envoy):
    """Envoy of a component that is not the denoiser (``model.vae``, ``model.text_encoder``, and
    their modules): its calls are not steps, so it is read at its first call whatever the step
    cursor (``model.vae.decoder.output`` after ``for step in tracer.iter[:]`` works)."""

    def _first_call(self, fn, *args):
        mediator = self._mediator()
        if mediator is None:
            return fn(self, *args)
        saved = mediator.iteration
        mediator.iteration = 0
        try:
            return fn(self, *args)
        finally:
            mediator.iteration = saved

    output = property(lambda self: self._first_call(Envoy.output.fget),
                      lambda self, value: self._first_call(Envoy.output.fset, value))
    inputs = property(lambda self: self._first_call(Envoy.inputs.fget),
                      lambda self, value: self._first_call(Envoy.inputs.fset, value))
    input = property(lambda self: self._first_call(Envoy.input.fget),
                     lambda self, value: self._first_call(Envoy.input.fset, value))

    def skip(self, value: Any) -> None:
        self._first_call(Envoy.skip, value)

    def _add_envoy(self, module: torch.nn.Module, name: str) -> Envoy:
        return _add_child(self, ComponentEnvoy, module, name)


def _add_child(parent: Envoy, cls: type, module: torch.nn.Module, name: str) -> Envoy:
    """``Envoy._add_envoy`` with another envoy class."""
    from ..envoy import _MOUNTS, TREE_VERSION, _mount_conflict

    envoy = cls(module, f"{parent.path}.{name}", parent._interleaver)
    parent._children[name] = envoy
    TREE_VERSION[0] += 1
    if name in _MOUNTS:
        _mount_conflict(parent, name)
    return envoy


# ----------------------------------------------------------------------------- the tracer


class DiffusionTracer(GenerationTracer):
    """``with model.generate(...) as tracer:`` for a pipeline.

    ``tracer.result`` inside an invoke is the pipeline's output narrowed to the invoke's prompts:
    every field holding one entry per image (``images`` as a list, array or tensor) keeps the
    invoke's entries; an invoke with the whole batch (or none) gets the output as it is.
    """

    @property
    def result(self) -> Any:
        mediator = current_mediator()
        if mediator is None:
            return self._output
        # The batcher has already cut the tensors with one row per prompt (keeping the output's
        # dataclass type); the other per-image fields (lists of PIL images, numpy arrays, several
        # images per prompt) are cut here. A field the batcher cut has fewer entries than there
        # are prompts, so it is not cut twice.
        value = request_at(mediator, RESULT, 0)
        return _narrow_output(value, mediator.batch_group, self.model._interleaver.batcher.total)


def _narrow_entries(value: Any, start: int, size: int, total: int) -> Any:
    if isinstance(value, (str, bytes, dict)):
        return value
    try:
        n = len(value)
    except TypeError:
        return value
    if n == 0 or n % total:
        return value
    per = n // total
    return value[start * per:(start + size) * per]


def _narrow_output(value: Any, group, total: int) -> Any:
    """A pipeline output with the entries of the invoke ``group = (start, size)`` of ``total`` prompts."""
    if group is None or total <= 0 or tuple(group) == (0, total):
        return value
    start, size = group
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{
            f.name: _narrow_entries(getattr(value, f.name), start, size, total)
            for f in dataclasses.fields(value) if f.init})
    if isinstance(value, tuple):
        return tuple(_narrow_entries(v, start, size, total) for v in value)
    return _narrow_entries(value, start, size, total)


# ----------------------------------------------------------------------------- the model


class DiffusionModel(SampleOutput, NNsight):
    """A diffusers pipeline wrapped for tracing."""

    def __init__(self, model: Union[str, Any], *args, dispatch: bool = False, automodel=None,
                 rename: Optional[Dict[str, Any]] = None, **kwargs) -> None:
        if isinstance(model, Diffuser):
            module = model
        elif isinstance(model, str) or hasattr(model, "__fspath__"):
            automodel = self._automodel_class(automodel)
            module = Diffuser(automodel.from_pretrained(str(model), *args, **kwargs))
        elif hasattr(model, "components") and callable(model):  # a loaded pipeline
            module = Diffuser(model)
        else:
            raise TypeError(
                f"DiffusionModel takes a path, a hub id or a diffusers pipeline, got {type(model).__name__}.")
        for component in module.children():
            component.eval()
        self.__dict__["repo_id"] = str(model) if isinstance(model, str) or hasattr(model, "__fspath__") \
            else getattr(getattr(module.pipeline, "config", None), "_name_or_path", None)
        # Weights are loaded with the pipeline: `dispatch` is accepted for LanguageModel parity.
        self.__dict__["dispatched"] = True
        self.__dict__["_load_args"] = args
        self.__dict__["_load_kwargs"] = kwargs
        super().__init__(module, rename=rename)

    @staticmethod
    def _automodel_class(automodel):
        import diffusers

        if automodel is None:
            return diffusers.DiffusionPipeline
        if isinstance(automodel, str):
            return getattr(diffusers, automodel)
        return automodel

    @property
    def pipeline(self):
        """The wrapped diffusers pipeline."""
        return self._module.pipeline

    def _method_tracer(self, name: str, method, args: tuple, kwargs: dict):
        if name == "generate":
            return DiffusionTracer(self, name, method, *args, **kwargs)
        return super()._method_tracer(name, method, args, kwargs)

    def dispatch(self) -> None:
        """Nothing to do: the pipeline's weights are loaded when the model is built."""

    def _add_envoy(self, module: torch.nn.Module, name: str) -> Envoy:
        denoiser = name == getattr(self._module, "denoiser_name", None)
        envoy = _add_child(self, DenoiserEnvoy if denoiser else ComponentEnvoy, module, name)
        if denoiser:
            envoy.__dict__["_pipeline_call"] = self.__dict__.setdefault("_pipeline_call", [False])
        return envoy

    # --------------------------------------------------------------- batching

    def _split_inputs(self, args: tuple, kwargs: Dict[str, Any]):
        """Prompts (positional or ``prompt=``/``prompt_embeds=``) are inputs; the rest is call options.

        Without prompts (``model.trace(sample, t, encoder_hidden_states=...)``, the denoiser), the
        positional arguments and tensor keywords are inputs.
        """
        if any(k in kwargs for k in PROMPT_KEYS) or (args and _is_prompt(args[0])):
            inputs = {k: v for k, v in kwargs.items() if k in PROMPT_KEYS}
        else:
            inputs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        config = {k: v for k, v in kwargs.items() if k not in inputs}
        if args or inputs:
            return (args, inputs), config
        return None, config

    def _prepare_input(self, *args, **kwargs) -> Tuple[tuple, dict, int]:
        prompt = None
        if args and _is_prompt(args[0]):
            if len(args) > 1 or "prompt" in kwargs:
                raise TypeError("DiffusionModel takes one prompt (a string or a list of strings) per invoke.")
            prompt, args = args[0], ()
        elif "prompt" in kwargs:
            prompt = kwargs.pop("prompt")
        negative = kwargs.pop("negative_prompt", None)
        if prompt is not None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            kwargs[NEGATIVES] = _negatives(negative, len(prompts), "the invoke's")
            return (), {"prompt": prompts, **kwargs}, len(prompts)
        if not args and isinstance(kwargs.get("prompt_embeds"), torch.Tensor):
            rows = int(kwargs["prompt_embeds"].shape[0])
            kwargs[NEGATIVES] = _negatives(negative, rows, "the invoke's")
            return (), kwargs, rows
        if negative is not None:
            raise TypeError(
                "`negative_prompt` goes with the prompts it applies to: pass it to an invoke that has "
                "a prompt (`tracer.invoke(\"a cat\", negative_prompt=\"blurry\")`) or to the trace.")
        return super()._prepare_input(*args, **kwargs)

    def _batch(self, batched: Tuple[tuple, dict], *args, **kwargs) -> Tuple[tuple, dict]:
        b_args, b_kwargs = batched
        if len(b_args) != len(args) or set(b_kwargs) != set(kwargs):
            raise NotImplementedError(
                "DiffusionModel can't batch invokes whose inputs have different structure (e.g. one "
                "invoke with `prompt` and another with `prompt_embeds`).")
        new_args = tuple(_join(a, b, f"argument {i}") for i, (a, b) in enumerate(zip(b_args, args)))
        return new_args, {k: _join(b_kwargs[k], kwargs[k], f"keyword {k!r}") for k in kwargs}

    # ------------------------------------------------------------- generation

    def _iteration_steps(self, name: str, kwargs: dict) -> Optional[int]:
        """Denoising steps of a ``generate`` call: ``num_inference_steps`` (or the pipeline's default)."""
        if name != "generate":
            return None
        pipe = self.pipeline
        steps = kwargs.get("num_inference_steps")
        if steps is None:
            try:
                steps = inspect.signature(pipe.__call__).parameters["num_inference_steps"].default
            except (KeyError, TypeError, ValueError):
                return None
            if not isinstance(steps, int):
                return None
        for key in ("timesteps", "sigmas"):
            if kwargs.get(key) is not None:
                steps = len(kwargs[key])
        scheduler = getattr(pipe, "scheduler", None)
        if getattr(scheduler, "order", 1) != 1 and kwargs.get("timesteps") is None:
            try:  # second-order schedulers call the denoiser more than once per step
                probe = copy.deepcopy(scheduler)
                probe.set_timesteps(steps)
                steps = len(probe.timesteps)
            except Exception:
                pass
        strength = kwargs.get("strength")
        if isinstance(strength, (int, float)) and kwargs.get("timesteps") is None:
            steps = min(int(steps * strength), steps)  # image-to-image pipelines skip the first steps
        return max(int(steps), 0)

    def __nnsight_generate__(self, *args, **kwargs) -> Any:
        own = kwargs.pop(NEGATIVES, None)
        if own is not None:
            self._negative_prompts(own, kwargs)
        seed = kwargs.pop("seed", None)
        if seed is not None:
            if kwargs.get("generator") is not None:
                raise ValueError("Pass either `seed=` or `generator=` to `generate`, not both.")
            kwargs["generator"] = torch.Generator().manual_seed(int(seed))
        interleaver = self._interleaver
        hooks: List[Any] = []
        scopes: List[Any] = []
        calling = self.__dict__.setdefault("_pipeline_call", [False])
        try:
            if interleaver.active:
                hooks = self._install_hooks(scopes)
            calling[0] = True
            output = self._module.generate(*args, **kwargs)
        finally:
            calling[0] = False
            for handle in hooks:
                handle.remove()
            while scopes:  # a call that ended by an exception: put the batch groups back
                _restore(interleaver, scopes.pop())
        end_steps(interleaver)  # before the result is provided: code after `tracer.iter[:]` runs
        return output

    def _negative_prompts(self, own: List[Optional[str]], kwargs: Dict[str, Any]) -> None:
        """One negative prompt per prompt: the invoke's own, else the trace's ``negative_prompt=``.

        Passed to the pipeline as a list matching the prompts (what diffusers takes for several
        prompts). With none at all the pipeline's default is left alone. A prompt without one,
        next to prompts with one, gets ``""``: the pipeline's own default (the unconditional
        prompt) for Stable Diffusion; pipelines whose default is not an empty prompt (SDXL's
        ``force_zeros_for_empty_prompt``: zero embeddings) refuse that mix.
        """
        trace = _negatives(kwargs.pop("negative_prompt", None), len(own), "the trace's")
        merged = [mine if mine is not None else theirs for mine, theirs in zip(own, trace)]
        if all(n is None for n in merged):
            return
        if any(n is None for n in merged):
            if getattr(getattr(self.pipeline, "config", None), "force_zeros_for_empty_prompt", False):
                raise ValueError(
                    f"{type(self.pipeline).__name__} uses zero embeddings, not an empty prompt, for "
                    f"prompts without a negative prompt, so it can't mix them with prompts that have "
                    f"one: give every invoke a `negative_prompt` (or pass one to the trace).")
            merged = ["" if n is None else n for n in merged]
        kwargs["negative_prompt"] = merged

    def _install_hooks(self, scopes: list) -> List[Any]:
        """Forward hooks for one traced pipeline call.

        * batch scopes (only when some invoke has part of the batch): components whose batch
          is a multiple of the prompts (guidance, images per prompt) give each invoke its rows;
        * the denoiser provides the root's input and output at every step (``model.input`` marks
          the start of a step for ``tracer.iter``).
        """
        interleaver = self._interleaver
        root = self._module
        denoiser = getattr(root, root.denoiser_name) if root.denoiser_name else None
        total = interleaver.batcher.total
        partial = total > 0 and any(
            m.batch_group is not None and tuple(m.batch_group) != (0, total) for m in interleaver.mediators)
        pre: List[Tuple[torch.nn.Module, Any]] = []
        post: List[Tuple[torch.nn.Module, Any]] = []
        if partial:
            pipe = root.pipeline
            for component in root.children():
                for module in [component, *component.children()]:
                    guided = module is denoiser
                    pre.append((module, _scope_enter(interleaver, pipe, guided, scopes)))
                    post.append((module, _scope_exit(interleaver, scopes)))
        handles = [m.register_forward_pre_hook(h, with_kwargs=True) for m, h in pre]
        if denoiser is not None:
            in_key, out_key = self._input_key, self._output_key

            def provide_input(module, args, kwargs):
                if interleaver.active:
                    return interleaver.handle(in_key, (args, kwargs))
                return None

            def provide_output(module, args, kwargs, output):
                if interleaver.active:
                    return interleaver.handle(out_key, output)
                return None

            handles.append(denoiser.register_forward_pre_hook(provide_input, with_kwargs=True))
            handles.append(denoiser.register_forward_hook(provide_output, with_kwargs=True))
        handles += [m.register_forward_hook(h, with_kwargs=True, always_call=True) for m, h in reversed(post)]
        return handles


# ----------------------------------------------------------------------------- helpers


def _negatives(value: Any, rows: int, whose: str) -> List[Optional[str]]:
    """``negative_prompt`` as one entry per prompt (None: not given)."""
    if value is None or isinstance(value, str):
        return [value] * rows
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, str) for v in value):
        if len(value) != rows:
            raise ValueError(
                f"{whose} `negative_prompt` has {len(value)} entries for {rows} prompt(s): give one "
                f"string for all of them, or a list with one per prompt.")
        return list(value)
    raise TypeError(f"`negative_prompt` must be a string or a list of strings, got {type(value).__name__}.")


def _is_prompt(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value))


def _join(a: Any, b: Any, where: str) -> Any:
    """Two invokes' values of one input: prompts and tensors are concatenated, equal options kept."""
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dim() > 0 and a.shape[1:] == b.shape[1:]:
            return torch.cat([a, b], dim=0)
        if a.dim() == 0 and torch.equal(a, b):
            return a
    elif not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        try:
            if a == b:
                return a
        except Exception:
            pass
    raise NotImplementedError(
        f"DiffusionModel can't batch the inputs of several invokes ({where}: {type(a).__name__} and "
        f"{type(b).__name__}). Give each invoke prompts, or tensors with the same trailing shape.")


def _rows(args: tuple, kwargs: dict) -> Optional[int]:
    """The batch size of a call: the first dimension of its first tensor argument."""
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def _take(value: Any, index: torch.Tensor, rows: int) -> Any:
    """``value`` with the rows of every ``rows``-row tensor reordered by ``index``."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == rows:
            return value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, tuple):
        items = [_take(v, index, rows) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_take(v, index, rows) for v in value]
    if isinstance(value, dict):
        mapped = {k: _take(v, index, rows) for k, v in value.items()}
        return mapped if type(value) is dict else _rebuild(value, mapped)  # keeps ModelOutput types
    return value


def _guided(pipe) -> bool:
    try:
        return bool(pipe.do_classifier_free_guidance)
    except Exception:
        scale = getattr(pipe, "_guidance_scale", None)
        return scale is not None and scale > 1


def _order(groups: Sequence[Tuple[int, int]], total: int, per_row: int) -> torch.Tensor:
    """Reorder ``[uncond rows, cond rows]`` into ``[uncond, cond]`` of each invoke in turn."""
    cuts = sorted({0, total, *(s for s, _ in groups), *(s + z for s, z in groups)})
    half = total * per_row
    index: List[int] = []
    for a, b in zip(cuts, cuts[1:]):
        for chunk in (0, 1):
            index.extend(range(chunk * half + a * per_row, chunk * half + b * per_row))
    return torch.tensor(index, dtype=torch.long)


def _scope_enter(interleaver, pipe, guided: bool, scopes: list):
    """Pre-hook: a call whose batch is ``m`` rows per prompt gives invoke ``(s, z)`` rows ``(m*s, m*z)``."""

    def enter(module, args, kwargs):
        batcher = interleaver.batcher
        total = batcher.total
        rows = _rows(args, kwargs)
        if not interleaver.active or rows is None or total <= 0 or rows == total or rows % total:
            scopes.append(None)
            return None
        m = rows // total
        owners = [md for md in interleaver.mediators if md.batch_group is not None]
        index = None
        if guided and m % 2 == 0 and _guided(pipe):
            index = _order([tuple(md.batch_group) for md in owners], total, m // 2)
            args, kwargs = _take((args, kwargs), index, rows)
        state = (total, [(md, md.batch_group) for md in owners], list(interleaver.caches), index, rows)
        for md, (s, z) in state[1]:
            md.batch_group = (s * m, z * m)
        interleaver.caches[:] = [(c, None if g is None else (g[0] * m, g[1] * m)) for c, g in state[2]]
        batcher.total = rows
        scopes.append(state)
        return args, kwargs

    return enter


def _restore(interleaver, state) -> None:
    if state is None:
        return
    total, groups, caches, _, _ = state
    interleaver.batcher.total = total
    for md, group in groups:
        md.batch_group = group
    interleaver.caches[:] = caches


def _scope_exit(interleaver, scopes: list):
    def exit(module, args, kwargs, output):
        if not scopes:
            return None
        state = scopes.pop()
        if state is None:
            return None
        _restore(interleaver, state)
        index, rows = state[3], state[4]
        if index is not None and output is not None:
            return _take(output, torch.argsort(index), rows)
        return None

    return exit
