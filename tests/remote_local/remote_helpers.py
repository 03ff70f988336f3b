"""Helpers shared by the remote_local tests (a uniquely named module: `conftest` is ambiguous)."""
import os

import torch


def make_mlp(seed=0, width=8, depth=3):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval()


def relative(path, libdir):
    """A path shown in golden files: ``<lib>/...`` for the temporary library, else repo-relative."""
    path = str(path)
    root = str(libdir)
    if path.startswith(root + os.sep):
        return "<lib>/" + os.path.relpath(path, root).replace(os.sep, "/")
    return path
