"""The hosted models: loaded at start-up, found by the model key a client sends.

``--model [NAME=]PATH_OR_HUB_ID`` loads the model with the same code as the
client's ``LanguageModel(PATH_OR_HUB_ID)`` (here with its weights). A client's
key is ``import.path.ClassName:{"repo_id": ..., "revision": ...}``; it names a
hosted model when its ``repo_id`` is the model's NAME, its path or hub id, or
the same directory.

Models load at start-up, unless the server is lazy (``--lazy``, ``--memory-budget``):
then each loads when a job first needs it and may be evicted to make room
(:mod:`.lifecycle`).
"""
import gc
import json
import os
from typing import Any, Callable, Dict, List, Optional

from .errors import ApiError
from .lifecycle import COLD, FAILED, LOADING, READY, MemoryBudget, Unit

# Files a client needs to build the model's skeleton and tokenizer without weights.
CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model",
                "added_tokens.json", "chat_template.jinja")
MAX_CONFIG_FILE_BYTES = 32 * 1024 * 1024


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class HostedModel(Unit):
    """One model this server runs jobs on."""

    engine = "transformers"  # what runs its jobs (runtime/server/vllm_hosted.py: "vllm")
    key_class = "nnsight.modeling.language.LanguageModel"  # the class its listed model key names

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.model: Any = None
        self.state = LOADING
        self.error: Optional[str] = None

    def load(self) -> int:
        """Load the weights; their size in bytes."""
        from nnsight import LanguageModel

        self.state = LOADING
        try:
            self.model = LanguageModel(self.source, dispatch=True)
            # Gradients are off unless a job asks (`hidden.requires_grad = True`), as on NDIF:
            # activations are then leaves a job can start a backward pass from.
            self.model.requires_grad_(False)
        except Exception as error:
            self.state, self.error = FAILED, "%s: %s" % (type(error).__name__, error)
            raise
        self.state, self.error = READY, None
        return model_bytes(self.model)

    def unload(self) -> None:
        self.model = None
        gc.collect()

    def estimate_bytes(self) -> int:
        if self.size_bytes:
            return self.size_bytes
        directory = self.source if os.path.isdir(self.source) else None
        if directory is None:
            return 0
        return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)
                   if name.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(directory, name)))

    def matches(self, repo_id: str) -> bool:
        if repo_id in (self.name, self.source):
            return True
        if os.path.isdir(self.source) and os.path.isdir(repo_id):
            return os.path.realpath(repo_id) == os.path.realpath(self.source)
        return False

    def directory(self) -> Optional[str]:
        """The local directory holding the model's files (a path, or the hub cache snapshot)."""
        if os.path.isdir(self.source):
            return self.source
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(self.source, local_files_only=True,
                                     allow_patterns=list(CONFIG_FILES))
        except Exception:
            return None

    def config_files(self) -> Dict[str, str]:
        """``{file name: text}`` of the config and tokenizer files (never the weights)."""
        directory = self.directory()
        files: Dict[str, str] = {}
        if directory is None:
            return files
        for name in CONFIG_FILES:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.path.getsize(path) <= MAX_CONFIG_FILE_BYTES:
                with open(path, encoding="utf-8") as f:
                    files[name] = f.read()
        return files


def parse_spec(spec: str, make: Optional[Callable[[str, str], HostedModel]] = None) -> HostedModel:
    """``NAME=PATH_OR_HUB_ID`` or ``PATH_OR_HUB_ID`` (named after its last path component);
    ``make(name, source)`` makes the model (default: :class:`HostedModel`)."""
    name, sep, source = spec.partition("=")
    if not sep:
        source = spec
        name = os.path.basename(os.path.normpath(spec)) if os.path.isdir(spec) else spec
    if not name or not source:
        raise ValueError("--model %r: expected [NAME=]PATH_OR_HUB_ID" % spec)
    return (make or HostedModel)(name, source)


def unavailable(models: "Models", name: str, hosted: Optional[HostedModel]) -> Dict[str, Any]:
    """The error of a job whose model is not hosted (any more), or failed to load."""
    if hosted is not None and hosted.error:
        return {"type": "ModelUnavailableError", "message": "model %r could not be loaded: %s" % (name, hosted.error),
                "hint": "the server's operator can see the details in its log; the next job tries again",
                "frames": []}
    return {"type": "ModelUnavailableError", "message": "model %r is no longer hosted by this server" % name,
            "hint": "hosted models: %s" % ", ".join(models.names()), "frames": []}


def model_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers."""
    try:
        tensors = list(model.parameters()) + list(model.buffers())
    except Exception:  # noqa: BLE001 - not a torch module: size unknown
        return 0
    return sum(t.numel() * t.element_size() for t in tensors if t.device.type != "meta")


class Models:
    """The hosted models by name (``lazy``: loaded on first use, within ``budget``)."""

    def __init__(self, specs: List[str], make: Optional[Callable[[str, str], HostedModel]] = None,
                 lazy: bool = False, budget: Optional[MemoryBudget] = None) -> None:
        self.by_name: Dict[str, HostedModel] = {}
        self.lazy = lazy or budget is not None
        self.budget = budget if budget is not None else MemoryBudget(None)
        for spec in specs:
            hosted = parse_spec(spec, make)
            if hosted.name in self.by_name:
                raise ValueError("two --model options are named %r; name them: --model NAME=PATH" % hosted.name)
            self.by_name[hosted.name] = hosted
            if self.lazy:
                hosted.state = COLD
                self.budget.register(hosted)

    def load_all(self) -> None:
        for hosted in self.by_name.values():
            hosted.size_bytes = hosted.load()

    def prepare(self, hosted: HostedModel) -> None:
        """Before a job (one worker thread): load a cold or evicted model, evicting others to fit.

        A load that fails leaves the model FAILED, its ``error`` saying why; the job then fails.
        """
        if not self.lazy:
            return
        try:
            self.budget.acquire(hosted)
        except Exception:  # noqa: BLE001 - recorded on the model (state FAILED, error)
            return
        self.budget.release(hosted)

    def names(self) -> List[str]:
        return sorted(self.by_name)

    def get(self, name: str) -> HostedModel:
        hosted = self.by_name.get(name)
        if hosted is None:
            raise ApiError(404, "unknown_model", "this server hosts no model named %r" % name,
                           "hosted models: %s" % ", ".join(self.names()), models=self.names())
        return hosted

    def find(self, key: str) -> HostedModel:
        """The hosted model a client's model key names (404 listing the hosted ones if none)."""
        _, sep, payload = key.partition(":")
        repo_id = None
        revision = None
        if sep:
            try:
                data = json.loads(payload)
            except ValueError:
                data = None
            if isinstance(data, dict):
                repo_id, revision = data.get("repo_id"), data.get("revision")
        if isinstance(repo_id, str):
            for hosted in self.by_name.values():
                if hosted.matches(repo_id):
                    if revision not in (None, "main"):
                        raise ApiError(404, "unknown_revision",
                                       "model %r is hosted at its default revision, not %r" % (hosted.name, revision),
                                       "drop revision= or ask the operator to host that revision",
                                       models=self.names())
                    return hosted
        shown = repo_id if isinstance(repo_id, str) else key
        raise ApiError(404, "unknown_model", "this server does not host %r" % shown,
                       "hosted models: %s (use one of these names or their paths in LanguageModel(...))"
                       % ", ".join(self.names()), models=self.names())
