"""Which runner a job gets: the operator's ``--sandbox`` mode and the job's API-key tier."""
from typing import Optional

ALWAYS, NEVER, PER_KEY = "always", "never", "per-key"
MODES = (ALWAYS, NEVER, PER_KEY)
TRUSTED, UNTRUSTED = "trusted", "untrusted"


def uses_sandbox(mode: str, tier: Optional[str]) -> bool:
    """Does a job of a key with ``tier`` run its code in a sandbox process?

    ``always``/``never`` decide for every job. ``per-key``: every tier but ``trusted`` is
    sandboxed. ``tier`` None means the server has no tier for the job (no key: ``--no-auth``,
    or a store that predates tiers): it runs in the model's process, as before tiers existed.
    """
    if mode == ALWAYS:
        return True
    if mode == NEVER:
        return False
    return tier is not None and tier != TRUSTED
