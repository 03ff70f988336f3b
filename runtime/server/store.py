"""Durable server state in ``--data-dir``: jobs, their logs, API keys (tier, limits) and the audit
log in SQLite (WAL), blobs as files.

A job is written here (request bytes to their file, then the row committed)
before the server acknowledges it. The promise: an acknowledged job survives
the server process dying at any moment (``kill -9``, a crash, out of memory):
what a process has written is in the operating system's page cache, which
outlives the process, and SQLite's WAL with ``synchronous=NORMAL`` keeps a
committed transaction through an application crash. It does not promise to
survive power loss or an OS crash (the last jobs acknowledged before one may
be lost; a lost request file fails its job with ``JobLostError``) unless the
store is opened with ``fsync=True`` (``nnsight-server serve --fsync``): then
every file is fsynced before it is renamed into place and every commit is
synced (``synchronous=FULL``), at about a millisecond per write on an SSD.

At the next start :meth:`Store.recover` re-queues a job that was running (up
to the attempt limit; then it is failed with the reason) and queued jobs
simply run.

Job states: ``QUEUED`` -> ``RUNNING`` -> ``COMPLETED`` | ``ERROR`` | ``CANCELLED``.
One connection, guarded by a lock: every caller (the HTTP handlers, the
worker) goes through short transactions.
"""
import json
import os
import sqlite3
import threading
import time
from typing import Any, Dict, List, Optional

QUEUED, RUNNING, COMPLETED, ERROR, CANCELLED = "QUEUED", "RUNNING", "COMPLETED", "ERROR", "CANCELLED"
FINISHED = (COMPLETED, ERROR, CANCELLED)
_IDS_PER_STATEMENT = 500  # (under SQLite's smallest limit on host parameters, 999)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    log_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    hash TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
"""

# Added after the first release: created here, and by :meth:`Store._migrate` in older databases
# (existing keys keep working, in the trusted tier they always ran in; see docs/security.md).
_SCHEMA_AUDIT = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    key_id TEXT,
    job_id TEXT,
    code TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
"""
# column -> its definition, added to a table that lacks it (NULL limits: the server's defaults)
_KEY_COLUMNS = (("tier", "TEXT NOT NULL DEFAULT 'trusted'"), ("max_in_flight", "INTEGER"),
                ("job_time_limit_s", "REAL"), ("max_result_bytes", "INTEGER"))
_JOB_COLUMNS = (("tier", "TEXT"),)
KEY_LIMITS = ("max_in_flight", "job_time_limit_s", "max_result_bytes")


def _write_file(path: str, data: bytes, fsync: bool) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old file or the whole new one)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """Jobs, logs, keys and blobs of one data directory."""

    def __init__(self, db_path: str, blob_dir: str, fsync: bool = False) -> None:
        os.makedirs(blob_dir, exist_ok=True)
        self.blob_dir = blob_dir
        self.fsync = fsync  # True: also survive power loss (see the module docstring)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=%s" % ("FULL" if fsync else "NORMAL"))
        self._db.executescript(_SCHEMA)
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        """Bring a database made by an older server up to this schema, keeping every row."""
        with self._lock:
            self._db.executescript(_SCHEMA_AUDIT)
            for table, columns in (("keys", _KEY_COLUMNS), ("jobs", _JOB_COLUMNS)):
                have = {row[1] for row in self._db.execute("PRAGMA table_info(%s)" % table)}
                for name, definition in columns:
                    if name not in have:
                        self._db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, name, definition))

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, job_id: str, kind: str) -> str:
        return os.path.join(self.blob_dir, "%s.%s" % (job_id, kind))

    def blob_size(self, job_id: str, kind: str) -> Optional[int]:
        try:
            return os.path.getsize(self.blob_path(job_id, kind))
        except FileNotFoundError:
            return None

    def read_blob(self, job_id: str, kind: str) -> Optional[bytes]:
        try:
            with open(self.blob_path(job_id, kind), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _drop_blobs(self, job_id: str) -> None:
        for kind in ("request", "result"):
            try:
                os.remove(self.blob_path(job_id, kind))
            except FileNotFoundError:
                pass

    # -- jobs ----------------------------------------------------------------------------------

    def add_job(self, job_id: str, model: str, key_id: Optional[str], payload: bytes,
                tier: Optional[str] = None) -> int:
        """Persist a new queued job (the request bytes first, then its row; ``tier``: its key's).

        Returns its queue position (queued jobs ahead of it), read in the same step as the insert."""
        _write_file(self.blob_path(job_id, "request"), payload, self.fsync)
        with self._lock:
            seq = self._db.execute("INSERT INTO jobs (id, model, key_id, status, created, tier) VALUES (?, ?, ?, ?, ?, ?)",
                                   (job_id, model, key_id, QUEUED, time.time(), tier)).lastrowid
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ? AND seq < ?", (QUEUED, seq)).fetchone()[0]

    def count(self, status: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def count_all(self) -> int:
        """Jobs stored, in any state (finished ones stay until they expire)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    def queue_length(self, model: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ? AND model = ?",
                                    (QUEUED, model)).fetchone()[0]

    def in_flight(self, key_id: Optional[str]) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE key_id IS ? AND status IN (?, ?)",
                                    (key_id, QUEUED, RUNNING)).fetchone()[0]

    def claim_next(self, model: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The oldest queued job (of ``model``, if given), now RUNNING (its attempt counted), or None.

        ``job["more_queued"]``: whether another job (of ``model``) was queued behind it then."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if model is None:
                    rows = db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq LIMIT 2", (QUEUED,)).fetchall()
                else:
                    rows = db.execute("SELECT * FROM jobs WHERE status = ? AND model = ? ORDER BY seq LIMIT 2",
                                      (QUEUED, model)).fetchall()
                row = rows[0] if rows else None
                if row is None:
                    db.execute("COMMIT")
                    return None
                db.execute("UPDATE jobs SET status = ?, attempts = attempts + 1, started = ? WHERE id = ?",
                           (RUNNING, time.time(), row["id"]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        job = dict(row)
        job["status"], job["attempts"] = RUNNING, job["attempts"] + 1
        job["more_queued"] = len(rows) > 1
        return job

    def requeue(self, job_id: str) -> bool:
        """Put a RUNNING job back in the queue, in its old place (its replica died); False if not running."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status = ? WHERE id = ? AND status = ?", (QUEUED, job_id, RUNNING))
            return cur.rowcount > 0

    def position(self, job_id: str) -> Optional[int]:
        """How many queued jobs are ahead of this one (None unless it is queued)."""
        return self.positions([job_id]).get(job_id)

    def positions(self, job_ids: List[str]) -> Dict[str, int]:
        """:meth:`position` of each of ``job_ids`` that is queued, in one statement per 500 ids (the
        dispatcher announces every watched job's place after each claim: one query each was two SQL
        statements per job per claim)."""
        found: Dict[str, int] = {}
        with self._lock:
            for start in range(0, len(job_ids), _IDS_PER_STATEMENT):
                chunk = job_ids[start:start + _IDS_PER_STATEMENT]
                rows = self._db.execute(
                    "SELECT j.id, (SELECT COUNT(*) FROM jobs k WHERE k.status = ? AND k.seq < j.seq) FROM jobs j "
                    "WHERE j.status = ? AND j.id IN (%s)" % ",".join("?" * len(chunk)), (QUEUED, QUEUED, *chunk))
                found.update((row[0], row[1]) for row in rows)
        return found

    def finish(self, job_id: str, status: str, error: Optional[Dict[str, Any]] = None,
               result: Optional[bytes] = None) -> None:
        """Record a job's end (its result file first, then the row)."""
        if result is not None:
            _write_file(self.blob_path(job_id, "result"), result, self.fsync)
        with self._lock:
            self._db.execute("UPDATE jobs SET status = ?, finished = ?, error = ? WHERE id = ?",
                             (status, time.time(), json.dumps(error) if error is not None else None, job_id))
        try:
            os.remove(self.blob_path(job_id, "request"))  # no longer needed to re-run it
        except FileNotFoundError:
            pass

    def cancel(self, job_id: str) -> Optional[str]:
        """Cancel a job: a queued one ends now, a running one is flagged. Returns its status then."""
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            status = row["status"]
            if status == QUEUED:
                self._db.execute("UPDATE jobs SET status = ?, finished = ? WHERE id = ?",
                                 (CANCELLED, time.time(), job_id))
                return CANCELLED
            if status == RUNNING:
                self._db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
            return status

    def get(self, job_id: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = dict(row)
        job["error"] = json.loads(job["error"]) if job["error"] else None
        return job

    # -- logs ----------------------------------------------------------------------------------

    def add_log(self, job_id: str, line: str, limit: int) -> Optional[int]:
        """Keep one printed line; its index (None once the job's limit is reached: only counted).

        One transaction (one commit) per line, not one per statement.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                n = db.execute("SELECT log_count FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
                db.execute("UPDATE jobs SET log_count = log_count + 1 WHERE id = ?", (job_id,))
                if n < limit:
                    db.execute("INSERT INTO logs (job_id, n, line) VALUES (?, ?, ?)", (job_id, n, line))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return n if n < limit else None

    def logs(self, job_id: str) -> List[str]:
        with self._lock:
            rows = self._db.execute("SELECT line FROM logs WHERE job_id = ? ORDER BY n", (job_id,)).fetchall()
        return [r[0] for r in rows]

    # -- restart and expiry --------------------------------------------------------------------

    def recover(self, max_attempts: int) -> List[str]:
        """After a crash: re-queue jobs that were running, or fail them once out of attempts."""
        with self._lock:
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE status = ?", (RUNNING,)).fetchall()
        failed = []
        for row in rows:
            if row["attempts"] < max_attempts:
                with self._lock:
                    self._db.execute("UPDATE jobs SET status = ? WHERE id = ?", (QUEUED, row["id"]))
            else:
                failed.append(row["id"])
                self.finish(row["id"], ERROR, {
                    "type": "JobLostError",
                    "message": "the server stopped while this job was running, %d time(s); it is not "
                               "retried again" % row["attempts"],
                    "hint": "a job that crashes the server (out of memory, a native crash) fails like "
                            "this; make it smaller, or ask the server's operator for its log",
                    "frames": []})
        return failed

    def expire(self, ttl_s: float) -> int:
        """Delete finished jobs (rows, logs, result files) older than ``ttl_s``."""
        cutoff = time.time() - ttl_s
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE finished IS NOT NULL AND finished < ?",
                                    (cutoff,)).fetchall()
        for row in rows:
            self._drop_blobs(row["id"])
            with self._lock:
                self._db.execute("DELETE FROM logs WHERE job_id = ?", (row["id"],))
                self._db.execute("DELETE FROM jobs WHERE id = ?", (row["id"],))
        return len(rows)

    def drop_orphan_blobs(self) -> int:
        """At start-up: delete blob files no stored job owns (a crash between a file's write and its
        row, or an interrupted write's ``.tmp``), so nothing in the data directory outlives the TTL."""
        with self._lock:
            owned = {row[0] for row in self._db.execute("SELECT id FROM jobs")}
        dropped = 0
        with os.scandir(self.blob_dir) as entries:
            names = [entry.name for entry in entries if entry.is_file()]
        for name in names:
            job_id, _, kind = name.partition(".")
            if job_id in owned and kind in ("request", "result"):
                continue
            try:
                os.remove(os.path.join(self.blob_dir, name))
                dropped += 1
            except FileNotFoundError:
                pass
        return dropped

    # -- API keys ------------------------------------------------------------------------------

    def add_key(self, key_id: str, key_hash: str, name: str, tier: str = "untrusted") -> None:
        with self._lock:
            self._db.execute("INSERT INTO keys (id, hash, name, created, tier) VALUES (?, ?, ?, ?, ?)",
                             (key_id, key_hash, name, time.time(), tier))

    def key(self, key_id: str) -> Optional[Dict[str, Any]]:
        """One key's row (its tier and limits; None when unknown)."""
        with self._lock:
            row = self._db.execute("SELECT id, name, created, revoked, tier, max_in_flight, job_time_limit_s, "
                                   "max_result_bytes FROM keys WHERE id = ?", (key_id,)).fetchone()
        return dict(row) if row is not None else None

    def set_key(self, key_id: str, **fields: Any) -> bool:
        """Change a key's tier or limits (a limit set to None: the server's default)."""
        allowed = ("tier",) + KEY_LIMITS
        names = [name for name in fields if name in allowed]
        if not names:
            return self.key(key_id) is not None
        with self._lock:
            cur = self._db.execute("UPDATE keys SET %s WHERE id = ?" % ", ".join("%s = ?" % n for n in names),
                                   [fields[n] for n in names] + [key_id])
            return cur.rowcount > 0

    def key_by_hash(self, key_hash: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT * FROM keys WHERE hash = ? AND revoked IS NULL", (key_hash,)).fetchone()
        return dict(row) if row is not None else None

    def keys(self) -> List[Dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, name, created, revoked, tier, max_in_flight, job_time_limit_s, "
                                    "max_result_bytes FROM keys ORDER BY created").fetchall()
        return [dict(r) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                   (time.time(), key_id))
            return cur.rowcount > 0

    # -- audit ---------------------------------------------------------------------------------

    def add_audit(self, event: str, key_id: Optional[str], job_id: Optional[str], code: Optional[str],
                  reason: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO audit (time, event, key_id, job_id, code, reason) VALUES (?, ?, ?, ?, ?, ?)",
                             (time.time(), event, key_id, job_id, code, reason))

    def audit(self, since: float = 0.0, key_id: Optional[str] = None, limit: int = 1000) -> List[Dict[str, Any]]:
        """Audit rows at or after ``since`` (epoch seconds), oldest first, at most ``limit`` (the newest)."""
        sql = "SELECT time, event, key_id, job_id, code, reason FROM audit WHERE time >= ?"
        args: List[Any] = [since]
        if key_id is not None:
            sql += " AND key_id = ?"
            args.append(key_id)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", args + [limit]).fetchall()
        return [dict(r) for r in reversed(rows)]

    def expire_audit(self, ttl_s: float, max_rows: int) -> int:
        """Delete audit rows older than ``ttl_s``, and the oldest beyond ``max_rows``."""
        with self._lock:
            n = self._db.execute("DELETE FROM audit WHERE time < ?", (time.time() - ttl_s,)).rowcount
            n += self._db.execute("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?",
                                  (max_rows,)).rowcount
        return n

    def key_tiers(self) -> Dict[str, int]:
        """Active keys per tier."""
        with self._lock:
            rows = self._db.execute("SELECT tier, COUNT(*) FROM keys WHERE revoked IS NULL GROUP BY tier").fetchall()
        return {r[0]: r[1] for r in rows}
