"""Authoring problems: scaffolding new problem folders, reading OpenEvolve-format dirs."""
