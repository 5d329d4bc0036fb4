"""`python -m bench`: the same run as `python bench/run.py`."""

import sys

from bench.cli import run

sys.exit(run())
