"""The server policy as the checker sees it: a thin view of :mod:`compiler.policy`.

Kept as one seam so tests can substitute a fixed policy.
"""
from __future__ import annotations

from typing import Mapping

from .. import policy

SERVER, DANGEROUS, USER, INSTALLED = policy.SERVER, policy.DANGEROUS, policy.USER, policy.INSTALLED


def module_kind(name: str) -> str:
    """``"server"``, ``"dangerous"``, ``"user"`` or ``"installed"`` for a dotted module name."""
    return policy.classify_module(name)


def module_reason(name: str) -> str:
    """Why the server refuses (or provides) ``name``: one phrase."""
    return policy.module_reason(name)


def dangerous_builtins() -> Mapping[str, str]:
    """Builtin name -> why the server refuses it."""
    return policy.DANGEROUS_BUILTINS


def location_of_path(path: str) -> str:
    """``"installed"``, ``"stdlib"`` or ``"user"``: where a file lives, by the policy's rules."""
    return policy.location_of_path(path)
