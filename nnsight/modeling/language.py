"""``LanguageModel``: a Hugging Face causal LM with its tokenizer (design §6.3).

``LanguageModel(path_or_id)`` builds the model on the meta device (no
weights, instant) and loads real weights on the first trace or on
``dispatch()``; ``dispatch=True`` loads them immediately. Keyword arguments go
to ``from_pretrained``. Inputs may be text, token ids, tensors, a
``BatchEncoding`` or a dict; several invokes are left-padded into one batch.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import peft_adapter
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
        inputs = {k: v for k, v in kwargs.items() if k in INPUT_KEYS}
        config = {k: v for k, v in kwargs.items() if k not in INPUT_KEYS}
        if args or inputs:
            return (args, inputs), config
        return None, config

    def _tokenizer(self):
        if self.tokenizer is None:
            raise AttributeError(
                "Tokenizer not found. If you passed a pre-loaded model to `LanguageModel`, you need "
                "to provide a tokenizer when initializing: `LanguageModel(model, tokenizer=tokenizer)`.")
        return self.tokenizer

    def _prepare_input(self, *inputs, **kwargs) -> Tuple[tuple, dict, int]:
        """Any supported input format → ``((), {"input_ids", "attention_mask"}, rows)``."""
        if inputs:
            if len(inputs) > 1:
                raise TypeError(f"LanguageModel takes one positional input per invoke, got {len(inputs)}.")
            encoded = self._encode(inputs[0])
        elif "input_ids" in kwargs or "inputs_embeds" in kwargs:
            encoded = self._encode({k: kwargs.pop(k) for k in list(kwargs) if k in INPUT_KEYS})
        else:
            return (), kwargs, 0
        return (), encoded, int(next(iter(encoded.values())).shape[0])

    def _encode(self, value: Any) -> Dict[str, torch.Tensor]:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            enc = self._tokenizer()(list(value), return_tensors="pt", padding=True)
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if isinstance(value, torch.Tensor):
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

    def _rows(self, rows: List[torch.Tensor], masks: Optional[List[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Left-pad 1-D id rows into ``input_ids`` and ``attention_mask``."""
        width = max(int(r.shape[0]) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = int(row.shape[0])
            if n:
                ids[i, width - n:] = row
                mask[i, width - n:] = 1 if masks is None else masks[i]
        return {"input_ids": ids, "attention_mask": mask}

    def _batch(self, batched: Tuple[tuple, dict], *args, **kwargs) -> Tuple[tuple, dict]:
        """Re-pad the rows so far and the new invoke's rows together (left padding)."""
        _, old = batched
        if "input_ids" not in old or "input_ids" not in kwargs:
            return super()._batch(batched, *args, **kwargs)
        rows = []
        for enc in (old, kwargs):
            for ids, mask in zip(enc["input_ids"], enc["attention_mask"]):
                rows.append(ids[mask.bool()])
        return (), self._rows(rows)

    def _execute(self, *args, **kwargs) -> Any:
        return super()._execute(*args, **kwargs)
