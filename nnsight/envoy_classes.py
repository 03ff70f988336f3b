"""``envoys=``: which Envoy class wraps each module of a model.

    model = NNsight(net, envoys={
        GPT2Attention: AttentionEnvoy,      # every module of this type (or a subclass of it)
        "transformer.h.*": BlockEnvoy,      # every module at a path pattern
        "*.mlp": MLPEnvoy,                  # a leading `*`: at any depth
    })

A key is a module class or a path pattern. Class keys win over path keys; a class key matches
through the module's MRO (the most specific class listed wins). A path pattern is matched against
the module's path from the root (a leading ``.`` or ``model.`` is dropped): each ``*`` stands for
one path component, except a leading ``*`` which stands for one or more, so ``"*"`` matches every
module below the root. Among path patterns the first one (in dict order) that matches wins. The
root envoy keeps the class of the model wrapper. Values are Envoy subclasses; custom properties
and methods work inside traces like the built-in ones.
"""
from typing import Dict, Optional, Tuple, Union

import torch

EnvoyKey = Union[type, str]


class EnvoyClasses:
    """The ``envoys=`` mapping of a model, split into class keys and compiled path patterns."""

    def __init__(self, envoys: Dict[EnvoyKey, type], base: type) -> None:
        self.by_type: Dict[type, type] = {}
        self.patterns: list = []  # (parts, leading_star, envoy class, key)
        for key, cls in envoys.items():
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"`envoys` value for {key!r} must be a subclass of Envoy, got {cls!r}.")
            if isinstance(key, type):
                if not issubclass(key, torch.nn.Module):
                    raise TypeError(f"`envoys` key {key!r} is a class but not a torch.nn.Module subclass.")
                self.by_type[key] = cls
            elif isinstance(key, str) and key.strip("."):
                self.patterns.append((*_compile(key), cls))
            else:
                raise TypeError(f"`envoys` keys are module classes or path patterns (str), got {key!r}.")

    def pick(self, module: torch.nn.Module, path: str) -> Optional[type]:
        """The Envoy class for ``module`` at ``path`` (``model.a.b``), or None for the default."""
        if self.by_type:
            for klass in type(module).__mro__:
                cls = self.by_type.get(klass)
                if cls is not None:
                    return cls
        if self.patterns:
            parts = path.split(".")[1:]  # below the root
            for pattern, leading_star, cls in self.patterns:
                if _matches(parts, pattern, leading_star):
                    return cls
        return None


def _compile(key: str) -> Tuple[Tuple[str, ...], bool]:
    key = key[len("model."):] if key.startswith("model.") else key.lstrip(".")
    parts = tuple(key.split("."))
    if parts[0] == "*":
        return parts[1:], True
    return parts, False


def _matches(parts: list, pattern: Tuple[str, ...], leading_star: bool) -> bool:
    if leading_star:
        if len(parts) < len(pattern) + 1:
            return False
        parts = parts[len(parts) - len(pattern):]
    elif len(parts) != len(pattern):
        return False
    return all(p == "*" or p == part for p, part in zip(pattern, parts))


def build(envoys: Optional[Dict[EnvoyKey, type]], base: type) -> Optional[EnvoyClasses]:
    """The resolver for an ``envoys=`` argument (None when there is none)."""
    if not envoys:
        return None
    if not isinstance(envoys, dict):
        raise TypeError(f"`envoys` must be a dict of module class or path pattern -> Envoy subclass, "
                        f"got {type(envoys).__name__}.")
    return EnvoyClasses(envoys, base)
