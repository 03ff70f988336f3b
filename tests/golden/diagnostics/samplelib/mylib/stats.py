"""Statistics helpers: fine to capture by value, except where noted."""
import math
import os
import subprocess
from typing import TYPE_CHECKING, List

import msgpack

import helpers

if TYPE_CHECKING:
    import socket  # never runs: not reported


def mean(xs: List[float]) -> float:
    return math.fsum(xs) / len(xs)


def load(path):
    with open(path) as f:
        return eval(f.read())


def cache_dir():
    return os.path.join(os.path.expanduser("~"), ".cache")


def peek(fn):
    breakpoint()
    g = getattr(fn, "__globals__")
    return g, fn.__code__, globals()


def shell(cmd):
    return subprocess.run(cmd, shell=True)


def pack(x):
    return msgpack.packb(x)


def shadowed(open=print, eval=repr):
    return open(eval(1))


def kind(x):
    match x:
        case int():
            return "int"
    return helpers.describe(x)
