"""What the server hosts and runs on: ``nnsight.status()``, ``is_model_running()``, ``ndif.compare()``.

Each prints a table (with ``rich`` when installed, plain text otherwise) and
returns the rows as data, so scripts can use them too.
"""
import platform
import sys
from typing import Any, Dict, List, Optional, Sequence

from .client import Client

CRITICAL = ("nnsight", "torch", "transformers")  # differences here change what a request means


def _table(title: str, columns: Sequence[str], rows: List[Sequence[Any]], flagged: Sequence[bool] = ()) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(str(c))
                  for i, c in enumerate(columns)]
        print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
        for i, row in enumerate(rows):
            mark = "  <-- differs" if i < len(flagged) and flagged[i] else ""
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + mark)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(str(column))
    for i, row in enumerate(rows):
        style = "bold red" if i < len(flagged) and flagged[i] else None
        table.add_row(*[str(v) for v in row], style=style)
    Console().print(table)


def status(host: Optional[str] = None, api_key: Optional[str] = None, show: bool = True) -> List[Dict[str, Any]]:
    """The hosted models: name, where they were loaded from, state, queue length."""
    with Client(host, api_key) as client:
        models = client.models()
    if show:
        _table("models on %s" % (host or "the configured server"), ("name", "source", "state", "queue"),
               [(m["name"], m["source"], m["state"], m["queue"]) for m in models])
    return models


def is_model_running(name: str, host: Optional[str] = None, api_key: Optional[str] = None) -> bool:
    """Is ``name`` (a hosted model's name or source) taking requests? A lazy server's model that is
    not in memory (COLD, EVICTED) or LOADING takes them too: they wait for the load."""
    return any(m["state"] in ("READY", "LOADING", "COLD", "EVICTED") and name in (m["name"], m["source"])
               for m in status(host, api_key, show=False))


def _local_version(name: str) -> str:
    if name == "nnsight":
        from compiler import __version__

        return __version__
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:  # noqa: BLE001 - not installed
        return "-"


def compare(host: Optional[str] = None, api_key: Optional[str] = None, show: bool = True) -> List[Dict[str, Any]]:
    """Package versions here and on the server; nnsight, torch and transformers flagged when they differ."""
    with Client(host, api_key) as client:
        env = client.env()
    server = dict(env.get("packages") or {})
    server["nnsight"] = env.get("nnsight", "-")
    server["python"] = env.get("python", "-")
    rows = []
    for name in ["python"] + sorted(server.keys() - {"python"}):
        local = platform.python_version() if name == "python" else _local_version(name)
        remote = server.get(name, "-")
        rows.append({"package": name, "local": local, "server": remote, "differs": local != remote,
                     "critical": name in CRITICAL and local != remote})
    if show:
        _table("this client vs the server", ("package", "local", "server"),
               [(r["package"], r["local"], r["server"]) for r in rows], [r["critical"] for r in rows])
        critical = [r["package"] for r in rows if r["critical"]]
        if critical:
            print("versions of %s differ: results may differ from a local run" % ", ".join(critical),
                  file=sys.stderr)
    return rows
