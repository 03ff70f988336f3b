"""A model hosted on the vLLM engine (``nnsight-server serve --model NAME=PATH --engine vllm``).

The model is nnsight's ``VLLM(PATH, mode="async")``: one ``AsyncLLM`` engine
(its engine core and workers in a child process, nnsight's worker class
running the interventions) on an event loop of its own. Remote jobs for it are
run by :class:`runtime.server.vllm_dispatcher.VLLMDispatcher`, many at once in
that one engine. ``--engine-arg KEY=VALUE`` options are engine arguments
(``max_model_len=512``, ``kv_cache_memory_bytes=...``; values are JSON when they
parse as JSON, else strings).
"""
import json
from typing import Any, Dict, List

from .lifecycle import FAILED, LOADING, READY
from .models import HostedModel

ENGINE = "vllm"
KEY_CLASS = "nnsight.modeling.vllm.model.VLLM"


def engine_args(pairs: List[str]) -> Dict[str, Any]:
    """``["max_model_len=512", "enable_prefix_caching=false"]`` -> engine keyword arguments."""
    found: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError("--engine-arg %r: expected KEY=VALUE (e.g. max_model_len=512)" % pair)
        try:
            found[key] = json.loads(text)
        except ValueError:
            found[key] = text
    return found


class HostedVLLMModel(HostedModel):
    """A :class:`HostedModel` whose ``model`` is an async ``VLLM`` engine."""

    engine = ENGINE
    key_class = KEY_CLASS

    def __init__(self, name: str, source: str, kwargs: Dict[str, Any]) -> None:
        super().__init__(name, source)
        self.kwargs = dict(kwargs)

    def load(self) -> int:
        """Start the engine; 0 bytes counted here (the weights live in the engine's child process)."""
        from nnsight.modeling.vllm import VLLM

        self.state = LOADING
        try:
            self.model = VLLM(self.source, dispatch=True, mode="async", **self.kwargs)
        except Exception as error:
            self.state, self.error = FAILED, "%s: %s" % (type(error).__name__, error)
            raise
        self.state, self.error = READY, None
        return 0

    def unload(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the engine (its child process and workers)."""
        model, self.model = self.model, None
        if model is not None:
            model.shutdown()
