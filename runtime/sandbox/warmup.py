"""A job the warm template runs on itself before it forks any child.

A fresh child inherits whatever the template has computed: the loader's
classification of every imported module, the compiler's lazy imports, the
tracer's first-use setup. Running one whole request through the accept path
here (a ``scan``: it runs on fake tensors and the stand-in's meta weights, so no
model process is needed) makes every child start warm.
"""
from typing import Any


def run_warmup_job(model: Any) -> None:
    """One ``remote='local'`` scan of ``model`` (the request's whole accept path, in this process)."""
    with model.scan("warm up", remote="local"):
        logits = model.output.logits.save()
