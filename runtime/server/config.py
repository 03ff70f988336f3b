"""The server's settings: where its state lives and the limits it enforces."""
import os
from dataclasses import dataclass, field
from typing import List


@dataclass
class ServerConfig:
    data_dir: str
    models: List[str] = field(default_factory=list)  # "[NAME=]PATH_OR_HUB_ID"
    host: str = "127.0.0.1"
    port: int = 8000
    auth: bool = True  # False: --no-auth, every request is accepted without a key
    max_request_bytes: int = 64 * 1024 * 1024  # larger bodies are refused with 413
    max_queue: int = 256  # queued jobs, all models together; beyond: 503 with Retry-After
    max_in_flight_per_key: int = 32  # queued + running jobs of one key; beyond: 429
    job_time_limit_s: float = 600.0  # wall clock of one job; then it fails with a clear error
    result_ttl_s: float = 24 * 3600.0  # finished jobs and their results are deleted after this
    max_attempts: int = 2  # a job running when the server died is re-queued until this many starts
    max_log_lines: int = 1000  # print() lines kept per job (later ones are counted, not kept)
    local_block_timeout_s: float = 300.0  # how long a job waits for the client to run a tracer.local() block
    max_local_result_bytes: int = 16 * 1024 * 1024  # a tracer.local() reply (uvicorn's WebSocket message cap)
    fsync: bool = False  # True: acknowledged jobs also survive power loss (runtime/server/store.py)
    # Tiers and per-key limits (runtime/server/keys.py): a key's own limit, else these defaults.
    no_auth_tier: str = "trusted"  # --no-auth: one user on their own machine, running their own code
    max_result_bytes: int = 1 << 30  # a job whose result is larger fails (nothing of it is stored)
    audit_ttl_s: float = 30 * 24 * 3600.0  # audit rows are deleted after this
    max_audit_rows: int = 100_000  # and the oldest beyond this many
    sandbox: str = "per-key"  # always | never | per-key: which jobs run their code in a sandbox (runtime/sandbox)
    sandbox_memory_bytes: int = 8 << 30  # address space a sandboxed job may add to the warm template's

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "jobs.sqlite3")

    @property
    def blob_dir(self) -> str:
        return os.path.join(self.data_dir, "blobs")
