"""``python -m compiler``: the ``nnsight-compile`` command line."""
import sys

from .cli import main

sys.exit(main())
