"""The nnsight compiler: frontend, IR, passes and CLI (torch-free, CPython 3.9-3.13)."""

__version__ = "0.9.0.dev0"  # the project's one version number (pyproject.toml reads it from here)
