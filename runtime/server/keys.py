"""API keys: created and revoked by the operator (``nnsight-server keys``), checked on each request.

Only a key's SHA-256 is stored; the key itself is shown once, when created.
"""
import hashlib
import secrets
from typing import Any, Dict, List, Optional, Tuple

from .store import Store


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(store: Store, name: str) -> Tuple[str, str]:
    """A new key for ``name``: returns ``(key_id, key)``."""
    key_id = "k_" + secrets.token_hex(4)
    key = "nns_" + secrets.token_urlsafe(24)
    store.add_key(key_id, _hash(key), name)
    return key_id, key


def check(store: Store, key: Optional[str]) -> Optional[str]:
    """The id of a valid, unrevoked ``key``, else None."""
    if not key:
        return None
    row = store.key_by_hash(_hash(key))
    return row["id"] if row is not None else None


def listing(store: Store) -> List[Dict[str, Any]]:
    return store.keys()


def revoke(store: Store, key_id: str) -> bool:
    return store.revoke_key(key_id)
