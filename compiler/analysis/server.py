"""The server policy as the checker sees it: a thin view of :mod:`compiler.policy`.

Kept as one seam so tests can substitute a fixed policy.
"""
from __future__ import annotations

from typing import Mapping, Optional

from .. import access, policy

SERVER, DANGEROUS, USER, INSTALLED = policy.SERVER, policy.DANGEROUS, policy.USER, policy.INSTALLED


def module_kind(name: str) -> str:
    """``"server"``, ``"dangerous"``, ``"user"`` or ``"installed"`` for a dotted module name."""
    return policy.classify_module(name)


def module_reason(name: str) -> str:
    """Why the server refuses (or provides) ``name``: one phrase."""
    return policy.module_reason(name)


def dangerous_builtins() -> Mapping[str, str]:
    """Builtin name -> why the server refuses it (the interactive ones are NN302, not here)."""
    refused = access.refused_builtins()
    for name in ("input", "breakpoint"):
        refused.pop(name, None)
    return refused


def location_of_path(path: str) -> str:
    """``"installed"``, ``"stdlib"`` or ``"user"``: where a file lives, by the policy's rules."""
    return policy.location_of_path(path)


def entry_refusal(name: str) -> Optional[str]:
    """Why dotted ``name`` (a module or an entry of one) is refused on the server, or None.

    The per-module table of :mod:`compiler.access` (``torch.save``, ``numpy.load``) on top of
    the module policy; a private part of a server module (``torch._C``) is refused too.
    """
    if module_kind(name) == DANGEROUS:
        return module_reason(name)
    if module_kind(name.split(".", 1)[0]) != SERVER:
        return None
    reason = access.entry_refusal(name)
    if reason is None and any(p.startswith("_") and not access.is_dunder(p) for p in name.split(".")[1:]):
        reason = "a private part of a server module"
    return reason
