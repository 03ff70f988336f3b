"""``nnsight-server``: serve hosted models over HTTP, manage API keys.

    nnsight-server serve --model [NAME=]PATH_OR_HUB_ID [--model ...] [--host 127.0.0.1]
                         [--port 8000] [--data-dir DIR] [--no-auth] [--job-time-limit S]
                         [--max-queue N] [--max-in-flight N] [--max-request-bytes N] [--result-ttl S] [--fsync]
                         [--max-result-bytes N] [--no-auth-tier trusted|untrusted] [--audit-ttl S]
                         [--engine vllm [--engine-arg KEY=VALUE ...] [--max-engine-jobs K]]
                         [--lazy] [--memory-budget SIZE]
                         [--ray [--address ADDR] [--replicas N] [--resources NAME:KEY=VALUE,...]]
    nnsight-server keys create NAME [--tier trusted|untrusted] [LIMITS] [--data-dir DIR]
    nnsight-server keys set KEY_ID [--tier trusted|untrusted] [LIMITS] [--data-dir DIR]
    nnsight-server keys list [--data-dir DIR]
    nnsight-server keys revoke KEY_ID [--data-dir DIR]
    nnsight-server audit [--since 2h|EPOCH|YYYY-MM-DD[THH:MM]] [--key KEY_ID] [--limit N] [--data-dir DIR]

LIMITS (per key; ``default`` resets one to the server's): --max-in-flight N, --job-time-limit S,
--max-result-bytes N.
"""
import argparse
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

from . import audit, keys
from .config import ServerConfig
from .store import Store

DEFAULT_DATA_DIR = os.path.join(os.path.expanduser("~"), ".local", "share", "nnsight-server")
log = logging.getLogger("nnsight.server")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnsight-server", description="Host models for nnsight's remote=True.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="load the models and answer requests")
    serve.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH_OR_HUB_ID",
                       help="a model to host (repeatable)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    serve.add_argument("--no-auth", action="store_true", help="accept requests without an API key (one user)")
    defaults = ServerConfig(data_dir="")
    serve.add_argument("--job-time-limit", type=float, default=defaults.job_time_limit_s, metavar="SECONDS")
    serve.add_argument("--max-queue", type=int, default=defaults.max_queue)
    serve.add_argument("--max-in-flight", type=int, default=defaults.max_in_flight_per_key,
                       help="queued + running jobs per API key")
    serve.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes)
    serve.add_argument("--result-ttl", type=float, default=defaults.result_ttl_s, metavar="SECONDS")
    serve.add_argument("--fsync", action="store_true",
                       help="fsync every write: acknowledged jobs also survive power loss, not only kill -9")
    serve.add_argument("--max-result-bytes", type=int, default=defaults.max_result_bytes,
                       help="a job whose result is larger fails (default for keys without their own limit)")
    serve.add_argument("--no-auth-tier", choices=keys.TIERS, default=defaults.no_auth_tier,
                       help="with --no-auth: the tier every job runs in (default trusted: one user's own machine)")
    serve.add_argument("--audit-ttl", type=float, default=defaults.audit_ttl_s, metavar="SECONDS",
                       help="audit log rows are deleted after this")
    serve.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                       help="what runs the models' jobs: transformers (one job at a time) or vllm (every "
                            "--model on the vLLM engine, jobs batched continuously)")
    serve.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="--engine vllm: an engine argument, e.g. max_model_len=512 (repeatable)")
    serve.add_argument("--max-engine-jobs", type=int, default=None, metavar="K",
                       help="--engine vllm: jobs in the engine at once (default 16)")
    serve.add_argument("--lazy", action="store_true",
                       help="load each model when a job first needs it (default: all at start)")
    serve.add_argument("--memory-budget", metavar="SIZE",
                       help="bytes the loaded models may take (8GiB, 500MB); idle ones are evicted, least "
                            "recently used first (implies --lazy)")
    ray_group = serve.add_argument_group("Ray", "run the models in Ray actors (runtime/server/replicas/)")
    ray_group.add_argument("--ray", action="store_true", help="run each model's replicas as Ray actors")
    ray_group.add_argument("--address", help="the Ray cluster (host:port of its head; default: RAY_ADDRESS, else a "
                                             "Ray started on this machine)")
    ray_group.add_argument("--replicas", type=int, default=1, help="actors per model (each runs one job at a time)")
    ray_group.add_argument("--resources", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                           help="what each replica of model NAME needs: num_cpus, num_gpus, memory (bytes or "
                                "8GiB) or a custom Ray resource (default num_cpus=1)")
    serve.add_argument("--sandbox", choices=("always", "never", "per-key"), default=defaults.sandbox,
                       help="run jobs' code in a confined sandbox process: always, never, or per-key "
                            "(keys of the untrusted tier; see docs/security.md)")
    serve.add_argument("--sandbox-memory", type=int, default=defaults.sandbox_memory_bytes >> 20, metavar="MiB",
                       help="address space one sandboxed job may use beyond the warm template")
    key_cmd = sub.add_parser("keys", help="create, change, list or revoke API keys")
    key_cmd.add_argument("action", choices=("create", "set", "list", "revoke"))
    key_cmd.add_argument("name", nargs="?", help="create: who the key is for; set, revoke: the key id")
    key_cmd.add_argument("--tier", choices=keys.TIERS,
                         help="trusted: jobs run in the server process; untrusted (default for new keys): in "
                              "the sandbox when the server has one")
    key_cmd.add_argument("--max-in-flight", type=_limit(int), metavar="N|default",
                         help="queued + running jobs of this key")
    key_cmd.add_argument("--job-time-limit", type=_limit(float), metavar="SECONDS|default",
                         help="wall time of one job of this key")
    key_cmd.add_argument("--max-result-bytes", type=_limit(int), metavar="N|default",
                         help="largest result of one job of this key")
    key_cmd.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    audit_cmd = sub.add_parser("audit", help="list refusals, limit hits, integrity violations and killed jobs")
    audit_cmd.add_argument("--since", default="24h", help="30m, 2h, 7d, epoch seconds or YYYY-MM-DD[THH:MM]")
    audit_cmd.add_argument("--key", help="only this key id")
    audit_cmd.add_argument("--limit", type=int, default=1000, help="at most this many (the newest)")
    audit_cmd.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    return parser


_DEFAULT = "default"


def _limit(cast):
    """A per-key limit: a positive number, or ``default`` (the server's)."""

    def parse(text: str):
        if text == _DEFAULT:
            return _DEFAULT
        value = cast(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive (or 'default')")
        return value

    return parse


def _limits(args: argparse.Namespace) -> dict:
    """The limits given on the command line (``None``: reset to the server's default)."""
    found = {}
    for name, attr in (("max_in_flight", "max_in_flight"), ("job_time_limit_s", "job_time_limit"),
                       ("max_result_bytes", "max_result_bytes")):
        value = getattr(args, attr)
        if value is not None:
            found[name] = None if value == _DEFAULT else value
    return found


def _show_limit(value, unit: str = "") -> str:
    return "default" if value is None else "%g%s" % (value, unit)


def _store(data_dir: str, fsync: bool = False) -> Store:
    config = ServerConfig(data_dir=data_dir)
    os.makedirs(data_dir, exist_ok=True)
    return Store(config.db_path, config.blob_dir, fsync=fsync)


def _keys(args: argparse.Namespace) -> int:
    store = _store(args.data_dir)
    if args.action == "create":
        if not args.name:
            print("nnsight-server keys create NAME: say who the key is for", file=sys.stderr)
            return 2
        tier = args.tier or keys.UNTRUSTED
        key_id, key = keys.create(store, args.name, tier, **_limits(args))
        print("created %s key %s for %s (shown once; only its hash is stored):\n%s" % (tier, key_id, args.name, key))
    elif args.action == "set":
        if not args.name:
            print("nnsight-server keys set KEY_ID [--tier ...] [limits] (see `nnsight-server keys list`)",
                  file=sys.stderr)
            return 2
        fields = _limits(args)
        if args.tier:
            fields["tier"] = args.tier
        if not keys.update(store, args.name, **fields):
            print("no key %r" % args.name, file=sys.stderr)
            return 1
        row = store.key(args.name)
        print("%s: tier %s, in flight %s, job time %s, result %s" % (
            args.name, row["tier"], _show_limit(row["max_in_flight"]), _show_limit(row["job_time_limit_s"], "s"),
            _show_limit(row["max_result_bytes"], " bytes")))
    elif args.action == "list":
        for row in keys.listing(store):
            state = "revoked" if row["revoked"] else "active"
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"]))
            print("%s  %-7s  %-9s  %s  in-flight=%s  job-time=%s  result-bytes=%s  %s" % (
                row["id"], state, row["tier"], created, _show_limit(row["max_in_flight"]),
                _show_limit(row["job_time_limit_s"], "s"), _show_limit(row["max_result_bytes"]), row["name"]))
    else:
        if not args.name:
            print("nnsight-server keys revoke KEY_ID (see `nnsight-server keys list`)", file=sys.stderr)
            return 2
        if not keys.revoke(store, args.name):
            print("no active key %r" % args.name, file=sys.stderr)
            return 1
        print("revoked %s" % args.name)
    return 0


def _audit(args: argparse.Namespace) -> int:
    try:
        since = audit.parse_since(args.since)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    for line in audit.format_rows(_store(args.data_dir).audit(since, args.key, args.limit)):
        print(line)
    return 0


def _warn_untrusted_in_process(config: ServerConfig, store: Store, sandbox) -> None:
    """Say loudly at start-up when untrusted callers' jobs will run in the server process."""
    if sandbox is not None:
        return
    untrusted = store.key_tiers().get(keys.UNTRUSTED, 0) if config.auth else 0
    if untrusted or (not config.auth and config.no_auth_tier == keys.UNTRUSTED):
        who = "%d untrusted API key(s) exist" % untrusted if untrusted else "--no-auth-tier is untrusted"
        log.warning("!" * 78)
        log.warning("WARNING: %s but this server has no sandbox runner: untrusted jobs run IN THE SERVER "
                    "PROCESS, guarded only by the loader and the integrity check. Start it with a sandbox, or "
                    "make the keys trusted (`nnsight-server keys set KEY_ID --tier trusted`) once you trust "
                    "their owners.", who)
        log.warning("!" * 78)


def parse_resources(specs: List[str]) -> Dict[str, Dict[str, Any]]:
    """``--resources NAME:num_cpus=1,num_gpus=0.5,memory=4GiB`` -> Ray actor options per model."""
    from .lifecycle import parse_bytes

    parsed: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        name, sep, rest = spec.partition(":")
        if not sep or not name or not rest:
            raise ValueError("--resources %r: expected NAME:KEY=VALUE[,KEY=VALUE]" % spec)
        options: Dict[str, Any] = {}
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError("--resources %r: %r is not KEY=VALUE" % (spec, item))
            if key == "memory":
                options["memory"] = parse_bytes(value)
            elif key in ("num_cpus", "num_gpus"):
                options[key] = float(value)
            else:
                options.setdefault("resources", {})[key] = float(value)
        parsed[name] = options
    return parsed


def _load_async_backend() -> None:
    """Import anyio's asyncio backend completely before nnsight mounts ``save`` on ``object``:
    anyio checks the attributes of some classes when it creates them, lazily."""
    import anyio
    import anyio.to_thread

    anyio.run(anyio.to_thread.run_sync, lambda: None)


def _runner(config: ServerConfig, models, in_process):
    """The worker's runner: in-process only with ``--sandbox never``, else tiered with a warm template."""
    if config.sandbox == "never":
        return in_process, None
    from runtime.sandbox.confine import Limits
    from runtime.sandbox.runner import SandboxRunner, TieredRunner
    from runtime.sandbox.warm import WarmTemplate

    specs = ["%s=%s" % (hosted.name, hosted.source) for hosted in models.by_name.values()]
    limits = Limits(memory_bytes=config.sandbox_memory_bytes, cpu_seconds=int(config.job_time_limit_s) + 5)
    template = WarmTemplate(specs, limits)
    names = {id(hosted.model): hosted.name for hosted in models.by_name.values()}
    return TieredRunner(config.sandbox, in_process, SandboxRunner(template, names)), template


def _serve(args: argparse.Namespace) -> int:
    _load_async_backend()
    import uvicorn

    from nnsight.tracing.remote import model_for_key, server_tracer

    from .app import Service, make_app
    from .events import EventHub
    from .models import Models
    from .runner import InProcessRunner
    from .worker import Worker

    config = ServerConfig(
        data_dir=args.data_dir, models=list(args.model), host=args.host, port=args.port, auth=not args.no_auth,
        max_request_bytes=args.max_request_bytes, max_queue=args.max_queue,
        max_in_flight_per_key=args.max_in_flight, job_time_limit_s=args.job_time_limit,
        result_ttl_s=args.result_ttl, fsync=args.fsync, max_result_bytes=args.max_result_bytes,
        no_auth_tier=args.no_auth_tier, audit_ttl_s=args.audit_ttl,
        sandbox=args.sandbox, sandbox_memory_bytes=args.sandbox_memory << 20)
    store = _store(config.data_dir, config.fsync)
    failed = store.recover(config.max_attempts)
    for job_id in failed:
        log.warning("job %s was running when the server stopped too often; marked failed", job_id)
    orphans = store.drop_orphan_blobs()
    if orphans:
        log.info("deleted %d blob files no job owns (left by a crash)", orphans)
    if args.engine != "vllm" and (args.engine_arg or args.max_engine_jobs is not None):
        print("--engine-arg and --max-engine-jobs apply to --engine vllm", file=sys.stderr)
        return 2
    if args.engine == "vllm" and args.ray:
        print("--engine vllm and --ray cannot be combined yet: a vLLM server hosts its engine itself", file=sys.stderr)
        return 2
    from .lifecycle import MemoryBudget, parse_bytes

    budget = MemoryBudget(parse_bytes(args.memory_budget)) if args.memory_budget else None
    hub = EventHub()
    template = None  # the sandbox's warm template process (runtime/sandbox/), when there is one
    make = _vllm_model(args.engine_arg) if args.engine == "vllm" else None
    if args.ray:
        models = Models(config.models, lazy=True)  # the front holds no weights; replicas load them
    else:
        models = Models(config.models, make, lazy=args.lazy, budget=budget)
    try:
        if args.ray:
            from .replicas.pool import ReplicaPool

            resources = parse_resources(args.resources)
            unknown = sorted(set(resources) - set(models.by_name))
            if unknown:
                raise SystemExit("--resources names %s, which no --model is named" % ", ".join(unknown))
            worker: Any = ReplicaPool(config, store, models, hub, replicas=args.replicas, resources=resources,
                                      address=args.address or os.environ.get("RAY_ADDRESS"), budget=budget)
            log.info("starting %d replica(s) of %s on Ray", args.replicas, ", ".join(models.names()))
        elif args.engine == "vllm":
            from .vllm_dispatcher import DEFAULT_MAX_JOBS, VLLMDispatcher

            models.load_all()
            worker = VLLMDispatcher(config, store, models, hub, args.max_engine_jobs or DEFAULT_MAX_JOBS)
        else:
            if not models.lazy:
                for hosted in models.by_name.values():
                    log.info("loading %s from %s", hosted.name, hosted.source)
                models.load_all()
            runner, template = _runner(config, models, InProcessRunner(server_tracer, model_for_key))
            _warn_untrusted_in_process(config, store, template)
            worker = Worker(config, store, models, runner, hub)
        app = make_app(Service(config, store, models, worker, hub))
        if args.engine == "vllm":
            _exit_on_sigterm()
        worker.start()
        try:
            uvicorn.run(app, host=config.host, port=config.port, log_level="warning", ws="auto")
        finally:
            worker.stop()
    finally:
        for hosted in models.by_name.values():  # a vLLM engine's child process stops with it
            shutdown = getattr(hosted, "shutdown", None)
            if callable(shutdown):
                shutdown()
        store.close()
        if template is not None:
            template.close()
    return 0


def _exit_on_sigterm() -> None:
    """SIGTERM ends the process through ``finally`` blocks, so the vLLM engine's child process is
    stopped too: uvicorn, after its graceful shutdown, raises the signal again with the handler it
    found, and the default one would end the process at once, leaving the engine core behind."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _vllm_model(pairs: List[str]) -> Any:
    """``make(name, source)`` of models hosted on vLLM, with the ``--engine-arg`` arguments."""
    from .vllm_hosted import HostedVLLMModel, engine_args

    kwargs = engine_args(pairs)
    return lambda name, source: HostedVLLMModel(name, source, kwargs)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="nnsight-server: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    if args.command == "audit":
        return _audit(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
