"""The front's dispatcher on Ray: hosted models run in replica actors, jobs are sent to them.

``nnsight-server serve --ray`` replaces the in-process worker with a
:class:`ReplicaPool`; the HTTP front, the job store and the event hub are the
embedded server's. Each hosted model gets ``--replicas`` actors
(:class:`.replica.Replica`, placed by Ray with the resources declared for the
model, spread over the nodes), each with one :class:`ReplicaSlot`: a front thread
that takes the model's oldest queued job, runs it on its actor and relays what
the job prints and its ``tracer.local()`` blocks while it runs.

Faults: a replica actor that dies while running a job (killed, out of memory, its
node lost) is restarted by Ray; its job goes back to the queue, in its old place,
and runs again on the next free replica (a line in the job's log says so). The
job runs at most ``max_attempts`` times in all, then fails with ``JobLostError``.
A job that raises is an ordinary job error: the replica serves the next one.
"""
import logging
import os
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

from .. import dispatch, events, keys
from ..config import ServerConfig
from ..events import EventHub
from ..lifecycle import COLD, EVICTED, FAILED, LOADING, READY, MemoryBudget, Unit
from ..local_exchange import LocalExchange
from ..models import HostedModel, Models
from ..store import CANCELLED, COMPLETED, Store

log = logging.getLogger("nnsight.server")

POLL_S = 0.05  # how often a slot collects a running job's printed lines
TIME_LIMIT_GRACE_S = 30.0  # a replica still busy this long past the job's limit is killed (and restarted)
RESTART_WAIT_S = 600.0  # how long a slot waits for Ray to restart its replica before giving up
# The front's environment variables that a replica gets too (bit-for-bit math, offline hub).
FORWARDED_ENV = ("MKL_CBWR", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE",
                 "TOKENIZERS_PARALLELISM")


def _actor_died(error: BaseException) -> bool:
    import ray.exceptions as rex

    return isinstance(error, (rex.RayActorError, rex.ActorUnavailableError))


class ReplicaSlot(Unit):
    """One replica actor of a model and the front thread that feeds it jobs."""

    def __init__(self, pool: "ReplicaPool", hosted: HostedModel, index: int) -> None:
        self.pool = pool
        self.hosted = hosted
        self.index = index
        self.name = "%s#%d" % (hosted.name, index)
        self.actor_name = "nnsight-replica:%s:%s:%d" % (pool.server_id, hosted.name, index)
        self.state = COLD
        self.error: Optional[str] = None
        self.actor: Any = None
        self.job_id: Optional[str] = None
        self._wake = threading.Event()
        self._timed_out = False
        self._thread = threading.Thread(target=self._loop, name="nnsight-replica-%s" % self.name, daemon=True)

    # -- Unit ------------------------------------------------------------------------------------

    def estimate_bytes(self) -> int:
        return self.size_bytes or self.hosted.estimate_bytes()

    def load(self) -> int:
        import ray

        self.pool.refresh(self.hosted)
        return int(ray.get(self.actor.load.remote()))

    def unload(self) -> None:
        import ray

        try:
            ray.get(self.actor.unload.remote(), timeout=60)
        finally:
            self.state = EVICTED
            self.pool.refresh(self.hosted)

    def describe(self) -> Dict[str, Any]:
        return {"index": self.index, "actor": self.actor_name, "state": self.state, "busy": self.job_id is not None}

    # -- the loop --------------------------------------------------------------------------------

    def start(self, actor: Any) -> None:
        self.actor = actor
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        pool = self.pool
        while not pool.stopping.is_set():
            job_id = None
            try:
                job = pool.store.claim_next(self.hosted.name)
                if job is None:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                job_id = job["id"]
                pool.announce_positions()
                self._process(job)
            except Exception:  # noqa: BLE001 - the slot must outlive any one job
                log.exception("nnsight-server replica %s: unexpected error", self.name)
                pool.abandon(job_id)
                time.sleep(0.5)

    def _process(self, job: Dict[str, Any]) -> None:
        pool, store, hub = self.pool, self.pool.store, self.pool.hub
        job_id = job["id"]
        hub.publish(job_id, events.DISPATCHED)
        payload = store.read_blob(job_id, "request")
        if payload is None:
            pool.fail(job_id, {"type": "JobLostError", "message": "the request of this job is missing from the "
                               "server's data directory", "hint": "submit it again", "frames": []})
            return
        if job.get("tier") == keys.UNTRUSTED:  # replicas run jobs in the actor's process, and the front
            pool.fail(job_id, keys.tier_not_served("in a Ray replica's process"))  # trusts their replies
            return
        self.job_id = job_id
        acquired = False
        try:
            if job["attempts"] > 1:
                pool.log(job_id, "nnsight-server: attempt %d of this job runs on replica %s"
                         % (job["attempts"], self.name))
            try:
                pool.budget.acquire(self)
                acquired = True
            except Exception as error:  # noqa: BLE001 - a replica that cannot load fails the job, not the slot
                if _actor_died(error):
                    raise
                pool.fail(job_id, {"type": "ModelUnavailableError", "message": "model %r could not be loaded on "
                                   "replica %s: %s" % (self.hosted.name, self.name, self.error or error),
                                   "hint": "the server's operator can see the details in its log; the next job "
                                   "tries again", "frames": []})
                return
            finally:
                pool.refresh(self.hosted)
            row = store.get(job_id)
            if row is not None and row["cancel"]:  # cancelled while its replica loaded the model
                outcome: Dict[str, Any] = {"status": "CANCELLED"}
            else:
                hub.publish(job_id, events.RUNNING)
                outcome = self._run(job_id, payload)
        except Exception as error:  # noqa: BLE001 - sorted below: a dead replica, or a bug
            if not _actor_died(error):
                raise
            lost: Optional[BaseException] = error
        else:
            lost = None
        finally:
            if acquired:
                pool.budget.release(self)
            self.job_id = None
            with pool._done_lock:
                pool.jobs_done += 1
        if lost is not None:
            self._lost(job, lost)
        else:
            pool.record(job_id, outcome)

    def _run(self, job_id: str, payload: bytes) -> Dict[str, Any]:
        """Run the job on the actor, relaying its printed lines and tracer.local() blocks."""
        import ray

        limit = self.pool.config.job_time_limit_s
        ref = self.actor.run.remote(job_id, payload, limit)
        deadline = time.monotonic() + limit + TIME_LIMIT_GRACE_S
        self._timed_out = False
        try:
            while True:
                done, _ = ray.wait([ref], timeout=POLL_S)
                self._relay(job_id)
                if done:
                    outcome = ray.get(ref)
                    self._relay(job_id)  # the last lines, before the outcome is published
                    return outcome
                if time.monotonic() > deadline and not self._timed_out:  # stuck in native code: kill it
                    log.warning("replica %s overran job %s's time limit; restarting it", self.name, job_id)
                    self._timed_out = True
                    ray.kill(self.actor, no_restart=False)
        except Exception as error:
            if not _actor_died(error):  # the front lost track of the job: make sure it does not run on
                log.warning("replica %s: restarting it after %s", self.name, type(error).__name__)
                ray.kill(self.actor, no_restart=False)
            raise

    def _relay(self, job_id: str) -> None:
        import ray

        news = ray.get(self.actor.poll.remote(job_id), timeout=60)
        for line in news["lines"]:
            self.pool.log(job_id, line)
        waiting = news["local"]
        if waiting is not None:  # blocks this slot while the client runs it: the job waits anyway
            from runtime.local_blocks import LocalBlockError, LocalBlockTimeout

            block = waiting["block"]
            try:
                reply = self.pool.local.ask(job_id, block, waiting["message"])
                answer = (reply, None, False)
            except LocalBlockTimeout as error:
                answer = (None, str(error), True)
            except LocalBlockError as error:
                answer = (None, str(error), False)
            ray.get(self.actor.reply_local.remote(job_id, block, *answer), timeout=60)

    def _lost(self, job: Dict[str, Any], error: BaseException) -> None:
        """The actor died while running ``job``: run it again elsewhere, or fail it."""
        import ray
        import ray.exceptions as rex

        pool = self.pool
        job_id = job["id"]
        if isinstance(error, rex.ActorUnavailableError):  # it may still be running the job: make sure it is not
            try:
                ray.kill(self.actor, no_restart=False)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.state, self.error = COLD, "%s: %s" % (type(error).__name__, str(error).splitlines()[0][:200])
        pool.refresh(self.hosted)
        row = pool.store.get(job_id)
        if self._timed_out:
            pool.fail(job_id, pool.timeout_error())
        elif row is not None and row["cancel"]:
            pool.store.finish(job_id, CANCELLED)
            pool.hub.publish(job_id, events.CANCELLED)
        elif job["attempts"] < pool.config.max_attempts:
            pool.log(job_id, "nnsight-server: replica %s stopped while running this job (%s); the job is queued "
                     "again and runs on the next free replica" % (self.name, type(error).__name__))
            pool.store.requeue(job_id)
            pool.wake()
        else:
            pool.fail(job_id, {"type": "JobLostError",
                               "message": "the replica running this job stopped %d times (last: %s on %s); it is "
                               "not retried again" % (job["attempts"], type(error).__name__, self.name),
                               "hint": "a job that kills its replica (out of memory, a native crash) fails like "
                               "this; make it smaller, or ask the server's operator for the replica's log",
                               "frames": []})
        self._await_restart()

    def _await_restart(self) -> None:
        """Wait for Ray to bring the actor back (it restarts without its model loaded)."""
        import ray

        deadline = time.monotonic() + RESTART_WAIT_S
        while not self.pool.stopping.is_set() and time.monotonic() < deadline:
            try:
                ray.get(self.actor.ping.remote(), timeout=10)
                self.state = COLD
                self.pool.refresh(self.hosted)
                return
            except Exception as error:  # noqa: BLE001 - still restarting
                if not _actor_died(error) and "GetTimeoutError" not in type(error).__name__:
                    raise
                time.sleep(0.5)
        self.state = FAILED
        self.pool.refresh(self.hosted)


class ReplicaPool:
    """Stands in for :class:`..worker.Worker` when the models run on Ray (same interface)."""

    def __init__(self, config: ServerConfig, store: Store, models: Models, hub: EventHub,
                 replicas: int = 1, resources: Optional[Dict[str, Dict[str, Any]]] = None,
                 address: Optional[str] = None, budget: Optional[MemoryBudget] = None) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.hub = hub
        self.replicas = max(1, replicas)
        self.resources = resources or {}
        self.address = address
        self.budget = budget if budget is not None else MemoryBudget(None)
        self.local = LocalExchange(hub, config.local_block_timeout_s, config.max_local_result_bytes)
        self.server_id = uuid.uuid4().hex[:8]
        self.namespace = "nnsight-server"
        self.stopping = threading.Event()
        self.slots: Dict[str, List[ReplicaSlot]] = {}
        self.jobs_done = 0  # jobs this process finished, in any end state (GET /v1/metrics)
        self._done_lock = threading.Lock()
        self._expired_at = 0.0
        self._housekeeping = threading.Thread(target=self._expire_loop, name="nnsight-expiry", daemon=True)

    # -- what Service and the CLI call -----------------------------------------------------------

    def start(self) -> None:
        try:
            import ray
        except ImportError:
            raise SystemExit("nnsight-server serve --ray needs Ray on this machine and every node: "
                             "pip install 'ray[default]'") from None

        from .replica import Replica

        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, namespace=self.namespace, runtime_env=self._runtime_env(),
                             logging_level=logging.WARNING)
                else:  # a one-machine Ray started here, for trying it out
                    ray.init(namespace=self.namespace, runtime_env=self._runtime_env(), include_dashboard=False,
                             logging_level=logging.WARNING)
            except ConnectionError as error:
                raise SystemExit("nnsight-server serve --ray: cannot reach the Ray cluster at %s (%s); start it "
                                 "with `ray start --head` or give its head's host:port with --address"
                                 % (self.address, error)) from None
        actor_class = ray.remote(Replica)
        for hosted in self.models.by_name.values():
            hosted.state = COLD
            options = dict(self.resources.get(hosted.name) or {"num_cpus": 1})
            slots = self.slots[hosted.name] = []
            for index in range(self.replicas):
                slot = ReplicaSlot(self, hosted, index)
                actor = actor_class.options(
                    name=slot.actor_name, namespace=self.namespace, max_restarts=-1, max_task_retries=0,
                    max_concurrency=4, scheduling_strategy="SPREAD", **options,
                ).remote(hosted.name, hosted.source, self.config.local_block_timeout_s, self.config.max_log_lines)
                self.budget.register(slot)
                slots.append(slot)
                slot.start(actor)
        for hosted in self.models.by_name.values():  # every actor answers: placed and started
            for slot in self.slots[hosted.name]:
                ray.get(slot.actor.ping.remote())
        self._housekeeping.start()

    def stop(self, timeout: float = 5.0) -> None:
        import ray

        self.stopping.set()
        self.wake()
        for slot in self.all_slots():
            if slot.job_id is not None:
                self.cancel(slot.job_id)
        for slot in self.all_slots():
            slot.join(timeout)
        if ray.is_initialized():
            ray.shutdown()  # the replica actors belong to this process: they end with it

    def wake(self) -> None:
        for slot in self.all_slots():
            slot.wake()

    def cancel(self, job_id: str) -> None:
        for slot in self.all_slots():
            if slot.job_id == job_id:
                slot.actor.interrupt.remote(job_id)

    def describe_replicas(self, name: str) -> List[Dict[str, Any]]:
        """The model's replicas for ``GET /v1/models`` (which job each runs is not public)."""
        return [slot.describe() for slot in self.slots.get(name, ())]

    def replica_of(self, job_id: str) -> Optional[Dict[str, Any]]:
        """The replica running ``job_id`` now (for its owner's ``GET /v1/requests/{id}``), or None."""
        for slot in self.all_slots():
            if slot.job_id == job_id:
                return {"name": slot.name, "index": slot.index, "actor": slot.actor_name}
        return None

    # -- what the slots share --------------------------------------------------------------------

    def all_slots(self) -> List[ReplicaSlot]:
        return [slot for slots in self.slots.values() for slot in slots]

    def refresh(self, hosted: HostedModel) -> None:
        """The model's state is its best replica's: READY, LOADING, EVICTED, COLD, else FAILED."""
        states = {slot.state for slot in self.slots.get(hosted.name, ())}
        for state in (READY, LOADING, EVICTED, COLD, FAILED):
            if state in states:
                hosted.state = state
                return

    def log(self, job_id: str, line: str) -> None:
        n = self.store.add_log(job_id, line, self.config.max_log_lines)
        if n is not None:
            self.hub.publish(job_id, events.LOG, n=n, line=line)

    def fail(self, job_id: str, info: Dict[str, Any]) -> None:
        dispatch.fail(self.store, self.hub, job_id, info)

    def timeout_error(self) -> Dict[str, Any]:
        return {"type": "JobTimeoutError", "message": "the job ran longer than this server's limit of %gs and was "
                "stopped" % self.config.job_time_limit_s,
                "hint": "make the job smaller (fewer tokens, fewer invokes) or split it", "frames": []}

    def record(self, job_id: str, outcome: Dict[str, Any]) -> None:
        """Store a replica's outcome and publish it."""
        status = outcome.get("status")
        if status == "COMPLETED":
            result = outcome["result"]
            self.store.finish(job_id, COMPLETED, result=result)
            self.hub.publish(job_id, events.COMPLETED, size=len(result), result=result)
        elif status == "ERROR":
            self.fail(job_id, outcome["error"])
        elif status == "TIMEOUT":
            self.fail(job_id, self.timeout_error())
        else:
            self.store.finish(job_id, CANCELLED)
            self.hub.publish(job_id, events.CANCELLED)

    def abandon(self, job_id: Optional[str]) -> None:
        """A job whose outcome could not be recorded: fail it if still running."""
        if job_id is None:
            return
        job = self.store.get(job_id)
        if job is not None and job["status"] == "RUNNING":
            self.fail(job_id, {"type": "ServerError", "message": "the server failed while running this job",
                               "hint": "the server's log has the details; submit the job again", "frames": []})

    def announce_positions(self) -> None:
        dispatch.announce_positions(self.store, self.hub)

    def _expire_loop(self) -> None:
        period = dispatch.expire_period(self.config)
        while not self.stopping.wait(period):
            try:
                dispatch.expire(self.store, self.config)
            except Exception:  # noqa: BLE001 - try again next period
                log.exception("nnsight-server: expiring old jobs failed")

    @staticmethod
    def _runtime_env() -> Dict[str, Any]:
        """The replicas' environment: the front's math and hub settings, and this source tree when it
        is not an installed package (each node must have the same code either way)."""
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        if "site-packages" not in root and "dist-packages" not in root:
            env["PYTHONPATH"] = root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        return {"env_vars": env} if env else {}
