"""API keys: created and revoked by the operator (``nnsight-server keys``), checked on each request.

Only a key's SHA-256 is stored; the key itself is shown once, when created.

Each key has a tier and may have its own limits:

* ``trusted``: the key's jobs run in the server process (fastest; the loader's guard and the
  integrity check are the boundary) -- for the operator's own code and people they vouch for;
* ``untrusted`` (the default for new keys): the key's jobs run in the sandbox runner when the
  server has one (a separate process that can be killed, with its own memory limit); a server
  without one runs them in-process and says so loudly at start-up.

Keys made before tiers existed keep working, in the ``trusted`` tier they always ran in.
Limits (jobs in flight, job wall time, result size) left unset follow the server's defaults
(``nnsight-server serve`` flags).
"""
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .config import ServerConfig
from .store import KEY_LIMITS, Store

TRUSTED, UNTRUSTED = "trusted", "untrusted"
TIERS = (TRUSTED, UNTRUSTED)


def tier_not_served(runs: str) -> Dict[str, Any]:
    """The error of an untrusted key's job on a server whose jobs run ``runs`` (no sandbox there)."""
    return {"type": "TierNotServedError",
            "message": "this server runs every job %s, with no per-job sandbox; jobs of untrusted keys are "
                       "refused here rather than run with less isolation than their tier promises" % runs,
            "hint": "ask the operator for a trusted key (nnsight-server keys set KEY_ID --tier trusted), or use "
                    "a server that runs untrusted jobs in its sandbox", "frames": []}


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def fingerprint(key: str) -> str:
    """A non-secret name of a presented key that matches none (for the audit log): 12 hex of its SHA-256."""
    return "fp_" + _hash(key)[:12]


def create(store: Store, name: str, tier: str = UNTRUSTED, **limits: Any) -> Tuple[str, str]:
    """A new key for ``name``: returns ``(key_id, key)``."""
    if tier not in TIERS:
        raise ValueError("tier must be one of %s, not %r" % (", ".join(TIERS), tier))
    key_id = "k_" + secrets.token_hex(4)
    key = "nns_" + secrets.token_urlsafe(24)
    store.add_key(key_id, _hash(key), name, tier)
    if limits:
        store.set_key(key_id, **limits)
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


def update(store: Store, key_id: str, **fields: Any) -> bool:
    """Set a key's tier and/or limits (``None``: back to the server's default)."""
    if "tier" in fields and fields["tier"] not in TIERS:
        raise ValueError("tier must be one of %s, not %r" % (", ".join(TIERS), fields["tier"]))
    return store.set_key(key_id, **fields)


@dataclass(frozen=True)
class KeySettings:
    """What applies to one caller's jobs: its tier and its limits (the key's own, else the server's)."""

    key_id: Optional[str]
    tier: str
    max_in_flight: int
    job_time_limit_s: float
    max_result_bytes: int


def settings(store: Store, config: ServerConfig, key_id: Optional[str]) -> KeySettings:
    """The tier and limits of ``key_id`` (None: ``--no-auth``, the server's defaults and no-auth tier)."""
    row = store.key(key_id) if key_id is not None else None
    own: Dict[str, Any] = {name: row[name] for name in KEY_LIMITS} if row is not None else {}
    tier = row["tier"] if row is not None else config.no_auth_tier
    return KeySettings(
        key_id, tier if tier in TIERS else UNTRUSTED,
        own.get("max_in_flight") if own.get("max_in_flight") is not None else config.max_in_flight_per_key,
        own.get("job_time_limit_s") if own.get("job_time_limit_s") is not None else config.job_time_limit_s,
        own.get("max_result_bytes") if own.get("max_result_bytes") is not None else config.max_result_bytes)
