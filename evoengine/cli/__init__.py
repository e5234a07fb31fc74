"""The ``evo`` command line."""
