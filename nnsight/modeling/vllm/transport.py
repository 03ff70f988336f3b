"""What crosses between the user's process and the workers besides the request bytes.

Everything is bytes or plain data, so it survives vLLM's msgpack RPC between
processes (and is never pickled by nnsight):

* to the worker: the finished requests' ``RequestOutput`` objects (what
  ``tracer.result`` gives inside an invoke), as a value tree;
* back: the saved variables, as the value tree ``remote='local'`` replies with
  (:func:`compiler.ir.request.encode_result`), plus each failed intervention's
  error (type, message, the user's frames).

When the engine runs in the user's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, one
worker), saves of tensors and plain containers skip the bytes: :func:`share_saves` copies them
(tensors cloned to the CPU, as decoding would make them), which costs a fraction of encoding and
decoding 512 logits. Anything else (a user class, a ``RequestOutput``) takes the bytes, counted
as the ``vllm.shared_saves`` fallback.
"""
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

import vllm.outputs  # noqa: F401  (loaded in every process that decodes request outputs: nothing is imported by name)

from compiler.ir.request import LOCAL_ZSTD_LEVEL, RESULT_ZSTD_LEVEL, decode_result, encode_result
from compiler.ir.values import decode_value, encode_value

RESULT_REF = "vllm_result"  # ["vllm_result", invoke]: a RequestOutput the client already has


_OUTPUT_MODULES = ("vllm", "builtins", "collections")


def names_vllm(ref: Any) -> bool:
    """Is ``ref`` a ``"vllm....:Class"`` reference (a class of vLLM's request outputs)?"""
    return isinstance(ref, str) and ref.count(":") == 1 and ref.partition(":")[0].split(".")[0] == "vllm"


def vllm_class(ref: Any) -> Any:
    """A class of vLLM's request outputs, from modules already loaded (nothing is imported)."""
    if isinstance(ref, str) and ref.count(":") == 1 and ref.partition(":")[0].split(".")[0] in _OUTPUT_MODULES:
        mod, _, qual = ref.partition(":")
        obj: Any = sys.modules.get(mod)
        for part in qual.split("."):
            if obj is None or part.startswith("_"):
                break
            obj = getattr(obj, part, None)
        else:
            if isinstance(obj, type):
                return obj
    raise ValueError(f"unexpected reference {ref!r} in request outputs")


def is_output_type(cls: type) -> bool:
    """May a value tree rebuild instances of ``cls``? vLLM's own output classes only."""
    return getattr(cls, "__module__", "").split(".")[0] == "vllm"


_vllm_output_type = is_output_type


def encode_outputs(outputs: Dict[int, Any]) -> bytes:
    """Finished ``RequestOutput`` objects by invoke index → bytes for the worker (on this machine)."""
    return encode_result(encode_value(dict(outputs), where="the vLLM request outputs"), LOCAL_ZSTD_LEVEL)


def decode_outputs(data: Optional[bytes]) -> Dict[int, Any]:
    if not data:
        return {}
    return decode_value(decode_result(data), resolve=vllm_class, may_build=_vllm_output_type)


def encode_saves(saved: Dict[str, Any], classref: Callable, objref: Callable,
                 results: Dict[int, Any], referenced: Optional[set] = None, local: bool = False) -> bytes:
    """Saved variables → bytes; request outputs the client sent go back as references (their
    invoke indices are added to ``referenced``: without any, the bytes are a plain remote result).
    ``local``: the bytes stay on this machine (a local engine): compressed at zstd's fastest level."""
    by_id = {id(v): k for k, v in results.items()}

    def ref(obj: Any) -> Any:
        if id(obj) in by_id:
            if referenced is not None:
                referenced.add(by_id[id(obj)])
            return [RESULT_REF, by_id[id(obj)]]
        return objref(obj)

    return encode_result(encode_value(saved, where="the saved values", classref=classref, objref=ref),
                         LOCAL_ZSTD_LEVEL if local else RESULT_ZSTD_LEVEL)


class _NotPlain(Exception):
    """A saved value :func:`share_saves` does not copy."""


_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes)


def share_saves(saved: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The saved variables as the user's process gets them from the bytes, made without the bytes:
    containers (``list``, ``tuple``, ``dict``) copied, tensors detached and cloned to the CPU (the
    engine may reuse their memory), an object saved twice copied once. None, and the reason noted
    as a fallback, when a value is anything else (the caller encodes the saves then)."""
    import torch

    memo: Dict[int, Any] = {}

    def copy(value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN_LEAVES:
            return value
        done = memo.get(id(value))
        if done is not None:
            return done
        if kind is torch.Tensor:
            data = value.detach()
            # (`clone` costs half of `to("cpu", copy=True)` for a tensor already on the CPU)
            out: Any = data.clone() if data.is_cpu else data.to("cpu", copy=True)
        elif kind is list:
            out = memo[id(value)] = []
            out.extend(copy(item) for item in value)
            return out
        elif kind is tuple:
            out = tuple(copy(item) for item in value)
        elif kind is dict:
            out = memo[id(value)] = {}
            for key, item in value.items():
                if type(key) not in (str, int):
                    raise _NotPlain("a dict key of type %s" % type(key).__name__)
                out[key] = copy(item)
            return out
        else:
            raise _NotPlain("a value of type %s.%s" % (kind.__module__, kind.__qualname__))
        memo[id(value)] = out
        return out

    try:
        return {name: copy(value) for name, value in saved.items()}
    except (_NotPlain, RecursionError) as reason:
        from compiler.fallbacks import FALLBACKS

        FALLBACKS.note("vllm.shared_saves", str(reason) or "nested too deep")
        return None


def decode_saves(data: bytes, resolve: Callable, outputs: Dict[int, Any],
                 may_build: Optional[Callable[[type], bool]] = None) -> Dict[str, Any]:
    def hook(ref: Any) -> Any:
        if isinstance(ref, list) and len(ref) == 2 and ref[0] == RESULT_REF:
            return outputs[ref[1]]
        return resolve(ref)

    def buildable(cls: type) -> bool:
        return _vllm_output_type(cls) or (may_build is not None and may_build(cls))

    return decode_value(decode_result(data), resolve=hook, may_build=buildable)


# ------------------------------------------------------------------------------------ errors


def encode_error(error: BaseException, files: set) -> Dict[str, Any]:
    """An intervention's exception as plain data: type, message, the frames in the user's code."""
    cls = type(error)
    frames = [[f.filename, f.lineno, f.name, f.line or ""] for f in traceback.extract_tb(error.__traceback__)
              if f.filename in files]
    return {"module": cls.__module__, "qualname": cls.__qualname__, "message": str(error), "frames": frames}


def decode_error(data: Dict[str, Any]) -> BaseException:
    """The exception to raise on the client: same type when importable, worker frames in a note."""
    message = data.get("message", "")
    cls: Any = None
    try:
        cls = _import(data["module"], data["qualname"])
    except Exception:
        cls = None
    error: BaseException
    try:
        error = cls(message) if isinstance(cls, type) and issubclass(cls, BaseException) else None
    except Exception:
        error = None
    if error is None:
        error = RuntimeError(f"{data.get('module')}.{data.get('qualname')}: {message}")
    lines = [f'  File "{f}", line {n}, in {name}' + (f"\n    {src}" if src else "")
             for f, n, name, src in data.get("frames", [])]
    if lines:
        error.add_note("Raised by the intervention in the vLLM worker:\n" + "\n".join(lines))
    return error


def _import(module: str, qualname: str) -> Any:
    """The exception class, from modules already loaded here (the reply never makes us import)."""
    obj: Any = sys.modules[module]
    for part in qualname.split("."):
        if part.startswith("_"):
            raise AttributeError(part)
        obj = getattr(obj, part)
    return obj


def errors_of(reply: Dict[str, Any]) -> List[BaseException]:
    return [decode_error(e) for e in reply.get("errors", [])]
