"""How a language model's invokes become one padded batch, keyword arguments included.

Each invoke's keyword arguments reach the tokenizer or the model exactly as they would without
nnsight: tokenizer options (``truncation=True, max_length=4``, ``add_special_tokens=False``, ...)
go to the tokenizer with that invoke's text, everything else (``labels``,
``decoder_input_ids``, ``output_attentions``, ...) to the model. Several invokes are padded to
one width on the tokenizer's padding side: token-aligned tensors are padded (``labels`` with
-100, so padding never counts in a loss), other tensors are concatenated when their shapes
agree, and anything that can't be batched is refused with an error naming the keyword.

Padded rows of a causal LM also need their own ``position_ids`` (a left-padded row's first
token is position 0, not the number of pads): :func:`positions_from_mask` gives them, so each
row of a padded batch computes what it computes alone.
"""
import inspect
from typing import Any, Dict, Tuple

import torch

# Keywords of a tokenizer's ``__call__`` that configure the encoding of the text.
TOKENIZER_OPTIONS = frozenset((
    "text_pair", "text_target", "text_pair_target", "add_special_tokens", "padding", "truncation",
    "stride", "is_split_into_words", "pad_to_multiple_of", "padding_side", "return_token_type_ids",
    "return_attention_mask", "return_overflowing_tokens", "return_special_tokens_mask",
    "return_offsets_mapping", "return_length", "verbose",
))
# The model's inputs that run along the prompt's tokens (dimension 1 is the prompt's width).
TOKEN_ALIGNED = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "position_ids": 0,
                 "inputs_embeds": 0}
IGNORED_LABEL = -100  # the label every Hugging Face loss skips


def split_tokenizer_options(kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(tokenizer options, the rest)`` of an invoke's keywords.

    ``max_length`` is both a tokenizer option and a generation option: it goes to the tokenizer
    when the call also asks the tokenizer to truncate or pad, else to the model (``generate``).
    """
    to_tokenizer = {k: v for k, v in kwargs.items() if k in TOKENIZER_OPTIONS}
    rest = {k: v for k, v in kwargs.items() if k not in TOKENIZER_OPTIONS}
    if "max_length" in rest and ("truncation" in to_tokenizer or "padding" in to_tokenizer):
        to_tokenizer["max_length"] = rest.pop("max_length")
    return to_tokenizer, rest


def width(batch: Dict[str, Any]) -> int:
    """The prompt width (tokens per row) of a prepared batch."""
    ids = batch.get("input_ids")
    if ids is None:
        ids = batch["inputs_embeds"]
    return int(ids.shape[1])


def pad_tokens(tensor: torch.Tensor, to: int, value: float, side: str) -> torch.Tensor:
    """``tensor`` padded along dimension 1 to ``to`` with ``value``, on ``side``."""
    missing = to - int(tensor.shape[1])
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[1] = missing
    pad = torch.full(shape, value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor] if side == "left" else [tensor, pad], dim=1)


def merge(old: Dict[str, Any], new: Dict[str, Any], pad_id: int, side: str, causal: bool) -> Dict[str, Any]:
    """The batch so far (``old``) and one more invoke's prepared keywords (``new``), as one batch."""
    if set(old) != set(new):
        differ = sorted(set(old) ^ set(new))
        raise ValueError(
            f"The invokes of this trace give different keyword arguments ({', '.join(differ)} in "
            f"some invokes only), so they can't run as one batch. Give every invoke with an input "
            f"the same keywords (e.g. `labels=` in each), or pass a keyword that applies to the "
            f"whole batch to the trace call itself.")
    to = max(width(old), width(new))
    out: Dict[str, Any] = {}
    for key, a in old.items():
        b = new[key]
        pad = TOKEN_ALIGNED.get(key, _MISSING)
        if key == "input_ids":
            pad = pad_id
        elif key == "labels" and causal:
            pad = IGNORED_LABEL
        if pad is not _MISSING and isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            out[key] = torch.cat([pad_tokens(a, to, pad, side), pad_tokens(b, to, pad, side)], dim=0)
        elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.dim() == 0 or a.shape[1:] != b.shape[1:]:
                raise ValueError(
                    f"Keyword argument {key!r} can't be batched across invokes: shapes "
                    f"{tuple(a.shape)} and {tuple(b.shape)} differ beyond the batch dimension. "
                    f"Give it the same shape in every invoke (pad it yourself), or run the invokes "
                    f"in separate traces.")
            out[key] = torch.cat([a, b], dim=0)
        elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or not _same(a, b):
            raise ValueError(
                f"Keyword argument {key!r} differs between invokes ({_short(a)} vs {_short(b)}) and "
                f"isn't a tensor with a batch dimension, so it can't be batched. Pass one value to "
                f"the trace call (it applies to every invoke), or run the invokes in separate traces.")
        else:
            out[key] = a
    return out


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def padded(mask: Any) -> bool:
    """Does an attention mask have padding? (False for masks whose values can't be read: scans)"""
    try:
        return isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all())
    except Exception:
        return False


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Each row's token positions counted from its first real token (pads get position 0)."""
    positions = mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


_ACCEPTS: Dict[Any, bool] = {}


def accepts_position_ids(module: torch.nn.Module) -> bool:
    """Does the module's ``forward`` take ``position_ids``? (per class, read once)"""
    cls = type(module)
    found = _ACCEPTS.get(cls)
    if found is None:
        try:
            found = "position_ids" in inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            found = False
        _ACCEPTS[cls] = found
    return found
