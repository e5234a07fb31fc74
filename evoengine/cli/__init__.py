"""The ``evo`` command line."""

from __future__ import annotations

import gc


def entry() -> int:
    """The ``evo`` executable (and ``python -m evoengine.cli``): :func:`main` with the
    cyclic garbage collector off while the libraries load.

    Imports and start-up allocate hundreds of thousands of long-lived objects, and each
    full collection among them walks them all (about 0.2 s of a run's start-up). The
    collector comes back on where start-up ends: ``run_cmd.execute`` for a search (after
    ``gc.freeze()``), at once for every other command.
    """
    gc.disable()
    from evoengine.cli.main import main

    return main()
