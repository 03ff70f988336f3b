"""``nnsight-server``: serve hosted models over HTTP, manage API keys.

    nnsight-server serve --model [NAME=]PATH_OR_HUB_ID [--model ...] [--host 127.0.0.1]
                         [--port 8000] [--data-dir DIR] [--no-auth] [--job-time-limit S]
                         [--max-queue N] [--max-in-flight N] [--max-request-bytes N] [--result-ttl S] [--fsync]
    nnsight-server keys create NAME [--data-dir DIR]
    nnsight-server keys list [--data-dir DIR]
    nnsight-server keys revoke KEY_ID [--data-dir DIR]
"""
import argparse
import logging
import os
import sys
import time
from typing import List, Optional

from . import keys
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
    serve.add_argument("--sandbox", choices=("always", "never", "per-key"), default=defaults.sandbox,
                       help="run jobs' code in a confined sandbox process: always, never, or per-key "
                            "(keys of the untrusted tier; see docs/security.md)")
    serve.add_argument("--sandbox-memory", type=int, default=defaults.sandbox_memory_bytes >> 20, metavar="MiB",
                       help="address space one sandboxed job may use beyond the warm template")
    key_cmd = sub.add_parser("keys", help="create, list or revoke API keys")
    key_cmd.add_argument("action", choices=("create", "list", "revoke"))
    key_cmd.add_argument("name", nargs="?", help="create: who the key is for; revoke: the key id")
    key_cmd.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    return parser


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
        key_id, key = keys.create(store, args.name)
        print("created key %s for %s (shown once; only its hash is stored):\n%s" % (key_id, args.name, key))
    elif args.action == "list":
        for row in keys.listing(store):
            state = "revoked" if row["revoked"] else "active"
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"]))
            print("%s  %-7s  %s  %s" % (row["id"], state, created, row["name"]))
    else:
        if not args.name:
            print("nnsight-server keys revoke KEY_ID (see `nnsight-server keys list`)", file=sys.stderr)
            return 2
        if not keys.revoke(store, args.name):
            print("no active key %r" % args.name, file=sys.stderr)
            return 1
        print("revoked %s" % args.name)
    return 0


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
        result_ttl_s=args.result_ttl, fsync=args.fsync, sandbox=args.sandbox,
        sandbox_memory_bytes=args.sandbox_memory << 20)
    store = _store(config.data_dir, config.fsync)
    failed = store.recover(config.max_attempts)
    for job_id in failed:
        log.warning("job %s was running when the server stopped too often; marked failed", job_id)
    orphans = store.drop_orphan_blobs()
    if orphans:
        log.info("deleted %d blob files no job owns (left by a crash)", orphans)
    models = Models(config.models)
    for hosted in models.by_name.values():
        log.info("loading %s from %s", hosted.name, hosted.source)
    models.load_all()
    hub = EventHub()
    runner, template = _runner(config, models, InProcessRunner(server_tracer, model_for_key))
    worker = Worker(config, store, models, runner, hub)
    app = make_app(Service(config, store, models, worker, hub))
    worker.start()
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", ws="auto")
    finally:
        worker.stop()
        store.close()
        if template is not None:
            template.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="nnsight-server: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
