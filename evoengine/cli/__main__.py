"""``python -m evoengine.cli``: the same as the ``evo`` executable."""

import sys

from evoengine.cli import entry

sys.exit(entry())
