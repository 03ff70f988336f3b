"""Sources of the user libraries the remote='local' tests import from a temporary directory.

They are written at test time into a directory put on ``sys.path`` -- never
installed -- so, as far as the server is concerned, they are the user's own
code: captured by value, and hidden while the "server" runs.
"""

MYMETHODS = '''\
"""A researcher's utility library (the seeds' ``mymethods``)."""
import enum
import functools
import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import nn

EPS = 1e-8
SCALE = 2.0
REGISTRY = {}
HISTORY = []
logger = logging.getLogger(__name__)


def normalize(x, dim=-1, eps=EPS):
    """Normalize a tensor to unit norm."""
    return x / (x.norm(dim=dim, keepdim=True) + eps)


class RunningStats:
    """Accumulate running mean/variance over batches."""

    def __init__(self):
        self.count = 0
        self._mean = None

    def add(self, x):
        x = x.detach().reshape(-1, x.shape[-1])
        self.count += 1
        m = x.mean(0)
        self._mean = m if self._mean is None else self._mean + (m - self._mean) / self.count

    @property
    def mean(self):
        return self._mean


class Probe(nn.Module):
    """A linear probe trained inside a trace."""

    def __init__(self, d):
        super().__init__()
        self.linear = nn.Linear(d, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1)


def make_scaler(k):
    def scale(x):
        return x * k
    return scale


def make_counter():
    count = 0

    def tick(x):
        nonlocal count
        count += 1
        return x + count
    return tick


def make_ops(k):
    return (lambda x: x + k, lambda x: x * k)


add_one, times_two = (lambda x: x + 1), (lambda x: x * 2)
OPS = [lambda x: x - 1, lambda x: x / 2]
ADDERS = [lambda x, i=i: x + i for i in range(3)]


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def traced(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)
    wrapper.calls = 0
    return wrapper


def plus_hundred(fn):
    def inner(x):
        return fn(x) + 100
    return inner


def register(name):
    def deco(fn):
        REGISTRY[name] = fn
        return fn
    return deco


@traced
def clamp_norm(x, limit=1.0):
    return x * torch.clamp(limit / (x.norm(dim=-1, keepdim=True) + EPS), max=1.0)


@plus_hundred
def shifted(x):
    return x


@register("center")
def center(x):
    return x - x.mean(dim=-1, keepdim=True)


def from_registry(name, x):
    return REGISTRY[name](x)


def remember(x):
    HISTORY.append(x.shape[0])
    return len(HISTORY)


class Mode(enum.Enum):
    MEAN = "mean"
    MAX = "max"


@dataclass
class SteerConfig:
    layer: int = 0
    scale: float = SCALE
    mode: Mode = Mode.MEAN
    tags: List[str] = field(default_factory=list)
    note: Optional[str] = None


class Base:
    factor = 1.0

    def apply(self, x):
        return self.transform(x) * self.factor

    def transform(self, x):
        return x


class Doubler(Base):
    factor = 2.0


class ShiftDoubler(Doubler):
    def __init__(self, shift):
        self.shift = shift

    def transform(self, x):
        return super().transform(x) + self.shift


def pool(x, mode=Mode.MEAN):
    if mode is Mode.MEAN:
        return x.mean(dim=0)
    return x.max(dim=0).values


def steer(h, vector, config):
    return h + config.scale * vector


def fails(x):
    raise ValueError("fails on purpose")


def noisy(x):
    logger.debug("noisy: %s", tuple(x.shape))
    return x
'''

MYTOOLS_INIT = '''\
"""A small package: relative imports, submodules, imports inside functions."""
from .core import project
from . import helpers
'''

MYTOOLS_CORE = '''\
import torch

from .helpers import unit


def project(x, direction):
    d = unit(direction)
    return (x @ d)[..., None] * d


def project_lazily(x, direction):
    from .helpers import unit as u
    return x @ u(direction)
'''

MYTOOLS_HELPERS = '''\
import math

import torch


def unit(v):
    return v / v.norm()


def rms(x):
    return math.sqrt(float((x ** 2).mean().detach()))
'''

BADLIB = '''\
"""Library code a server must refuse."""
import os
import subprocess

import torch
import yaml


def cwd_len(x):
    return x * len(os.getcwd())


def run(x):
    subprocess.run(["true"])
    return x


def evaluate(x):
    return x * eval("2")


def read(x):
    with open("/etc/hostname") as f:
        f.read()
    return x


def parse(x):
    return x * yaml.safe_load("a: 1")["a"]


def download(x):
    torch.hub.list("pytorch/vision")
    return x


def copy_later(x):
    import shutil
    return x
'''

SCENARIOS = '''\
"""Traces a server refuses; diagnostics point into this file (stable lines for golden files)."""
import os
import threading

import torch
import yaml

import badlib

LOCK = threading.Lock()


def import_os(model, x):
    with model.trace(x, remote="local"):
        import os
        out = model.output.save()
    return out


def uses_os(model, x):
    with model.trace(x, remote="local"):
        out = (model.output * len(os.sep)).save()
    return out


def calls_eval(model, x):
    with model.trace(x, remote="local"):
        out = (model.output * eval("2")).save()
    return out


def calls_open(model, x):
    with model.trace(x, remote="local"):
        name = open("/etc/hostname").read()
        out = model.output.save()
    return out


def uses_yaml(model, x):
    with model.trace(x, remote="local"):
        out = (model.output * yaml.safe_load("a: 2")["a"]).save()
    return out


def uses_torch_hub(model, x):
    with model.trace(x, remote="local"):
        torch.hub.list("pytorch/vision")
        out = model.output.save()
    return out


def library(model, x, fn):
    with model.trace(x, remote="local"):
        out = fn(model.output).save()
    return out


def unencodable(model, x):
    with model.trace(x, remote="local"):
        with LOCK:
            out = model.output.save()
    return out


def many(model, x):
    with model.trace(x, remote="local"):
        import subprocess
        out = (badlib.evaluate(model.output) * eval("1")).save()
    return out


def same_without_remote(model, x):
    with model.trace(x):
        out = (model.output * len(os.sep) * eval("2")).save()
    return out
'''

FAKEPKG = '''\
"""A package installed in a site-packages directory that the server does not have."""


def triple(x):
    return x * 3
'''

FILES = {
    "mymethods.py": MYMETHODS,
    "mytools/__init__.py": MYTOOLS_INIT,
    "mytools/core.py": MYTOOLS_CORE,
    "mytools/helpers.py": MYTOOLS_HELPERS,
    "badlib.py": BADLIB,
    "scenarios.py": SCENARIOS,
    "site-packages/fakepkg/__init__.py": FAKEPKG,
}
