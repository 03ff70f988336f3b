"""``nnsight-server``: hosts models and runs the interventions clients send with ``remote=True``.

One process: an HTTP API (``app``: Starlette on uvicorn, the protocol of
docs/protocol.md) in front of a durable job queue (``store``: SQLite in WAL
mode plus blob files in ``--data-dir``), drained by a worker thread
(``worker``) that runs each job through a job runner (``runner``: the one
accept path of :mod:`runtime.accept`, in this process). Status frames reach
WebSocket subscribers through ``events``; ``models`` loads and finds hosted
models, ``keys`` manages API keys, ``cli`` is the command line.
"""
