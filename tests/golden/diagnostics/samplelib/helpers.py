"""A sibling module: user code, captured by value."""
import torch


def describe(x):
    return type(x).__name__


def run(code):
    exec(compile(code, "<x>", "exec"))
    return __import__("json")


def hub_model(name):
    return torch.hub.load("org/repo", name)


def escape():
    return __builtins__
