"""``LanguageModel``: a Hugging Face causal LM with its tokenizer.

``LanguageModel(path_or_id)`` builds the model on the meta device (no
weights, instant) and loads real weights on the first trace or on
``dispatch()``; ``dispatch=True`` loads them immediately. Keyword arguments go
to ``from_pretrained``. Inputs may be text, token ids, tensors, a
``BatchEncoding`` or a dict; several invokes are padded into one batch on the tokenizer's
padding side (left by default), keyword arguments included (see ``token_batch``).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import peft_adapter
from . import token_batch
from .base import NNsight
from .generator import GenerationMixin

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


class LanguageModel(GenerationMixin, NNsight):
    """A causal language model wrapped for tracing.

    ``tokenizer_kwargs`` go to ``AutoTokenizer.from_pretrained`` (defaults: left padding);
    ``peft`` names a PEFT adapter (a path or hub id) loaded onto the model (``pip install peft``);
    ``rename``/``envoys`` as for :class:`NNsight`; every other keyword goes to ``from_pretrained``
    (``device_map="auto"``, ``torch_dtype``, ...).
    """

    task: Optional[str] = "text-generation"  # the transformers pipeline task (`TransformersModel.pipe`)

    def __init__(self, model: Union[str, torch.nn.Module], *args, tokenizer=None,
                 dispatch: bool = False, automodel=None, rename: Optional[Dict[str, Any]] = None,
                 tokenizer_kwargs: Optional[Dict[str, Any]] = None, peft: Optional[str] = None,
                 envoys: Optional[Dict[Any, type]] = None, **kwargs) -> None:
        import transformers

        self.__dict__["tokenizer"] = tokenizer
        self.__dict__["_automodel"] = automodel or self._default_automodel(model, kwargs) \
            or transformers.AutoModelForCausalLM
        self.__dict__["_load_args"] = args
        self.__dict__["_load_kwargs"] = kwargs
        self.__dict__["_peft"] = peft
        if isinstance(model, torch.nn.Module):
            self.__dict__["repo_id"] = getattr(getattr(model, "config", None), "_name_or_path", None)
            self.__dict__["dispatched"] = True
            module = model if peft is None else peft_adapter.load(model, peft, kwargs)
        else:
            self.__dict__["repo_id"] = model
            if self.tokenizer is None:
                self.__dict__["tokenizer"] = self._load_tokenizer(model, kwargs, tokenizer_kwargs)
            if dispatch:
                module = self._load(model, *args, **kwargs)
            else:
                module = self._load_meta(model, *args, **kwargs)
            self.__dict__["dispatched"] = bool(dispatch)
        super().__init__(module, rename=rename, envoys=envoys)

    # ---------------------------------------------------------------- loading

    def _default_automodel(self, model: Union[str, torch.nn.Module], kwargs: Dict[str, Any]):
        """The class that loads ``model`` when no ``automodel`` is given (None: a causal LM)."""
        return None

    def _tokenizer_defaults(self) -> Dict[str, Any]:
        return {"padding_side": "left"}  # generation continues after each row's last token

    def _load_tokenizer(self, repo_id: str, kwargs: Dict[str, Any],
                        tokenizer_kwargs: Optional[Dict[str, Any]] = None):
        from transformers import AutoTokenizer

        tok_kwargs = {k: kwargs[k] for k in ("revision", "trust_remote_code", "token") if k in kwargs}
        tok_kwargs.update(self._tokenizer_defaults())
        tok_kwargs.update(tokenizer_kwargs or {})
        tokenizer = AutoTokenizer.from_pretrained(repo_id, **tok_kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _load_meta(self, repo_id: str, *args, **kwargs) -> torch.nn.Module:
        from transformers import AutoConfig

        cfg_kwargs = {k: kwargs[k] for k in ("revision", "trust_remote_code", "token") if k in kwargs}
        config = AutoConfig.from_pretrained(repo_id, **cfg_kwargs)
        with torch.device("meta"):
            build = getattr(self._automodel, "from_config", None)  # an auto class; else a model class
            model = build(config, trust_remote_code=kwargs.get("trust_remote_code", False)) \
                if build is not None else self._automodel(config)
            if self._peft is not None:  # the adapter's layers, without weights: the tree is final
                model = peft_adapter.structure(model, self._peft, kwargs)
        return model

    def _load(self, repo_id: str, *args, **kwargs) -> torch.nn.Module:
        model = self._automodel.from_pretrained(repo_id, *args, **kwargs)
        if self._peft is not None:
            model = peft_adapter.load(model, self._peft, kwargs)
        model.eval()
        return model

    def dispatch(self) -> None:
        """Load the real weights now and point the envoy tree at them."""
        if not self.dispatched:
            self._update(self._load(self.repo_id, *self._load_args, **self._load_kwargs))
            self.__dict__["dispatched"] = True

    def _ensure_dispatched(self) -> None:
        if not self.__dict__.get("_scanning"):  # a scan runs on the meta model as it is
            self.dispatch()

    # --------------------------------------------------------------- batching

    def _split_inputs(self, args: tuple, kwargs: Dict[str, Any]):
        """The trace's own input (with its tokenizer options) apart from the options of the call."""
        to_tokenizer, rest = token_batch.split_tokenizer_options(kwargs)
        inputs = {k: v for k, v in rest.items() if k in INPUT_KEYS}
        config = {k: v for k, v in rest.items() if k not in INPUT_KEYS}
        if args or inputs:
            return (args, {**inputs, **to_tokenizer}), config
        if to_tokenizer:
            raise TypeError(
                f"Tokenizer option(s) {', '.join(sorted(to_tokenizer))} were given to a trace without "
                f"an input: pass them to each `tracer.invoke(text, ...)` whose text they apply to.")
        return None, config

    def _tokenizer(self):
        if self.tokenizer is None:
            raise AttributeError(
                "Tokenizer not found. If you passed a pre-loaded model to `LanguageModel`, you need "
                "to provide a tokenizer when initializing: `LanguageModel(model, tokenizer=tokenizer)`.")
        return self.tokenizer

    def _prepare_input(self, *inputs, **kwargs) -> Tuple[tuple, dict, int]:
        """One invoke's input → ``((), {"input_ids", "attention_mask", ...its keywords}, rows)``.

        Tokenizer options go to the tokenizer with the text; every other keyword (``labels``,
        ``decoder_input_ids``, ...) goes on to the model with the encoded input.
        """
        to_tokenizer, kwargs = token_batch.split_tokenizer_options(kwargs)
        if inputs:
            if len(inputs) > 1:
                raise TypeError(f"LanguageModel takes one positional input per invoke, got {len(inputs)}.")
            encoded = self._encode(inputs[0], to_tokenizer)
        elif "input_ids" in kwargs or "inputs_embeds" in kwargs:
            encoded = self._encode({k: kwargs.pop(k) for k in list(kwargs) if k in INPUT_KEYS}, to_tokenizer)
        else:
            return (), kwargs, 0
        return (), {**encoded, **kwargs}, int(next(iter(encoded.values())).shape[0])

    def _encode(self, value: Any, to_tokenizer: Optional[Dict[str, Any]] = None) -> Dict[str, torch.Tensor]:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            options = {"padding": True, **(to_tokenizer or {})}
            enc = self._tokenizer()(list(value), return_tensors="pt", **options)
            return {k: v for k, v in enc.items() if k in INPUT_KEYS}
        if to_tokenizer:
            raise TypeError(
                f"Tokenizer option(s) {', '.join(sorted(to_tokenizer))} apply to text, but this input "
                f"is already tokenized ({type(value).__name__}): tokenize it with those options "
                f"yourself, or pass the text.")
        if isinstance(value, torch.Tensor):
            if value.dim() in (1, 2) and value.numel() and not value.is_floating_point():
                # Rows of one width: nothing to pad. What `_rows` makes, without splitting the rows
                # (a new CPU long tensor and a mask of ones; ~60 us less per trace on the tiny GPT-2).
                ids = value.to(device="cpu", dtype=torch.long, copy=True)
                ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
                return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            return self._rows([value] if value.dim() == 1 else list(value))
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            return self._rows([torch.tensor(value)])
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple, torch.Tensor)) for v in value):
            return self._rows([torch.as_tensor(v) for v in value])
        if hasattr(value, "keys") and "input_ids" in value.keys() or (hasattr(value, "keys") and "inputs_embeds" in value.keys()):
            out = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in dict(value).items()
                   if k in INPUT_KEYS}
            for k, v in list(out.items()):
                if v.dim() == 1 and k != "inputs_embeds":
                    out[k] = v.unsqueeze(0)
            if "input_ids" in out and "attention_mask" not in out:
                out["attention_mask"] = torch.ones_like(out["input_ids"])
            return out
        raise TypeError(
            f"Unsupported input for LanguageModel: {type(value).__name__}. Use a string, a list of "
            f"strings, token ids (list or tensor), a BatchEncoding or a dict with 'input_ids'.")

    def _pad_id(self) -> int:
        tok = self.tokenizer
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        if pad is None:
            pad = getattr(getattr(self._module, "config", None), "pad_token_id", None) or 0
        return int(pad)

    def _padding_side(self) -> str:
        """The tokenizer's padding side (left when there is no tokenizer: causal LMs read the last token)."""
        side = getattr(self.tokenizer, "padding_side", None)
        return side if side in ("left", "right") else "left"

    def _rows(self, rows: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Pad 1-D id rows into ``input_ids`` and ``attention_mask`` (tokenizer's padding side)."""
        width = max(int(r.shape[0]) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        left = self._padding_side() == "left"
        for i, row in enumerate(rows):
            n = int(row.shape[0])
            if n:
                place = slice(width - n, width) if left else slice(0, n)
                ids[i, place] = row
                mask[i, place] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _batch(self, batched: Tuple[tuple, dict], *args, **kwargs) -> Tuple[tuple, dict]:
        """Pad the rows so far and the new invoke's rows to one width, keywords included."""
        _, old = batched
        if not ("input_ids" in old or "inputs_embeds" in old) or not ("input_ids" in kwargs or "inputs_embeds" in kwargs):
            return super()._batch(batched, *args, **kwargs)
        causal = not getattr(getattr(self._module, "config", None), "is_encoder_decoder", False)
        return (), token_batch.merge(old, kwargs, self._pad_id(), self._padding_side(), causal)

    def _execute(self, *args, **kwargs) -> Any:
        """Run the model; rows of a padded batch get positions counted from their first token."""
        mask = kwargs.get("attention_mask")
        if ("position_ids" not in kwargs and kwargs.get("past_key_values") is None
                and token_batch.padded(mask) and token_batch.accepts_position_ids(self._module)):
            kwargs["position_ids"] = token_batch.positions_from_mask(mask)
        return super()._execute(*args, **kwargs)
