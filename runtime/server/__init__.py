"""``nnsight-server``: hosts models and runs the interventions clients send with ``remote=True``.

One process: an HTTP API (``app``: Starlette on uvicorn, the protocol of
docs/protocol.md) in front of a durable job queue (``store``: SQLite in WAL
mode plus blob files in ``--data-dir``), drained by a worker thread
(``worker``) that runs each job through a job runner (``runner``: the one
accept path of :mod:`runtime.accept`, in this process). Status frames reach
WebSocket subscribers through ``events``; ``models`` loads and finds hosted
models (``lifecycle``: lazy loading and eviction under a memory budget),
``keys`` manages API keys, ``cli`` is the command line. With ``serve --ray``
the models run in Ray actors instead and ``replicas`` feeds them the queue.
"""
