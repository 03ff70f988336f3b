"""IR versioning: the current version and the language levels it knows.

Rules (ONNX-style): every serialized program starts with a mandatory header
carrying ``ir_version``. A loader accepts any version <= IR_VERSION (older
ones go through :mod:`compiler.ir.upgraders`) and refuses newer or unknown ones.
"""

IR_VERSION = 3
# History: 2 added CodeUnit.facts and Program.dynamic_names, and the frontend fills
# envoys/dynamic/dynamic_names (version 1 programs load with ``dynamic`` True).
# 3 added the unit fact "backward" (a ``with <expr>.backward():`` gradient session) and
# Program.unknown_facts (version 2 programs load with "backward" unknown).

# Oldest CPython a program may target (client floor of the project).
MIN_PYTHON = (3, 9)


def producer_python() -> str:
    import sys

    return "%d.%d.%d" % sys.version_info[:3]


def producer_nnsight() -> str:
    from .. import __version__

    return __version__
