"""Sampling parameters of an invoke, and the nnsight fields they carry to the worker.

Each invoke is one vLLM request. Its intervention travels inside the request's
``SamplingParams.extra_args`` (vLLM passes them unchanged to the model runner,
through msgpack between processes), as plain data:

* ``nnsight_request``: the trace's encoded :class:`compiler.ir.request.Request`
  (the same bytes ``remote='local'`` sends to a server);
* ``nnsight_trace_id``: groups the invokes of one trace (they share a namespace);
* ``nnsight_invoke``: this invoke's index in the trace;
* ``nnsight_unit``: the program unit this invoke runs (``None``: no intervention);
* ``nnsight_expected``: how many invokes the trace has;
* ``nnsight_logs``: (set by a server) the intervention's ``print()`` lines are kept
  and returned with the saves instead of going to the worker's stdout.
"""
from typing import Any, Dict, List, Optional, Tuple

REQUEST = "nnsight_request"
TRACE_ID = "nnsight_trace_id"
INVOKE = "nnsight_invoke"
ENTRY = "nnsight_entry"  # which `with tracer.invoke` of the body (in the order the body reached them)
UNIT = "nnsight_unit"
EXPECTED = "nnsight_expected"
LOGS = "nnsight_logs"


def sampling_params(options: Dict[str, Any]):
    """``vllm.SamplingParams`` from trace/invoke keyword arguments, with a clear error for typos."""
    from vllm.sampling_params import SamplingParams  # (not `from vllm`: its lazy lookup costs ~5 us a call)

    options = dict(options)
    extra = options.pop("extra_args", None) or {}
    try:
        params = SamplingParams(**options)
    except TypeError as error:
        raise TypeError(
            f"{error}. VLLM.trace() / tracer.invoke() keyword arguments are vLLM sampling "
            f"parameters (temperature=, max_tokens=, top_p=, seed=, ...); engine options belong "
            f"to VLLM(...).") from None
    if params.n != 1:
        raise ValueError(
            "n > 1 (several samples per request) is not supported with VLLM traces: each invoke is "
            "one request with one intervention, and vLLM would fan it out into n requests. Use one "
            "invoke per sample instead, e.g. `tracer.invoke([\"Hello\"] * n)` (one request per "
            "prompt, each running the intervention), with temperature > 0 and no shared seed= (the "
            "same seed gives the same sample).")
    params.extra_args = dict(extra)
    return params


def prompt_of(value: Any):
    """A vLLM prompt from an invoke input: text, token ids, or a prompt dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.reshape(-1).tolist()
    except ImportError:
        pass
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return {"prompt_token_ids": list(value)}
    raise TypeError(
        f"Unsupported vLLM prompt {type(value).__name__}: use a string, a list of token ids or a "
        f"vLLM prompt dict.")


def split_prompts(args: tuple) -> List[Any]:
    """The prompts of one invoke: ``"a"`` → one; ``["a", "b"]`` → two requests, same intervention."""
    if len(args) != 1:
        raise TypeError(f"VLLM takes one positional input per invoke (a prompt or a list of prompts), got {len(args)}.")
    value = args[0]
    if isinstance(value, (list, tuple)) and value and not all(isinstance(v, int) for v in value):
        return [prompt_of(v) for v in value]
    return [prompt_of(value)]


def tag(params, payload: bytes, trace_id: str, invoke: int, unit: Optional[int], expected: int,
        entry: Optional[int] = None) -> None:
    """Put the nnsight fields on ``params``, made by :func:`sampling_params` for this one request.

    Such params are never shared with another request, so the engine may take them with a shallow
    copy (``skip_clone``) instead of a deep copy of the fields and the request bytes: ~60 us per
    request.
    """
    params.extra_args = {**(params.extra_args or {}), REQUEST: payload, TRACE_ID: trace_id, INVOKE: invoke,
                         UNIT: unit, EXPECTED: expected, ENTRY: entry}
    params.skip_clone = True


def keeps_logs(params) -> bool:
    """Does the request ask for its intervention's printed lines back (a server's job)?"""
    return bool((getattr(params, "extra_args", None) or {}).get(LOGS))


def entry_of(params) -> Optional[int]:
    """Which invoke block of the trace body made this request (None: the trace's own input)."""
    entry = (getattr(params, "extra_args", None) or {}).get(ENTRY)
    return None if entry is None else int(entry)


def untag(params) -> Optional[Tuple[bytes, str, int, Optional[int], int]]:
    """The nnsight fields of a request's params, or None for a request without intervention."""
    extra = getattr(params, "extra_args", None) or {}
    if TRACE_ID not in extra:
        return None
    return extra[REQUEST], extra[TRACE_ID], int(extra[INVOKE]), extra[UNIT], int(extra[EXPECTED])
