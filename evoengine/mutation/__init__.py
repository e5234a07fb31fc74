"""Turning parents into children: edit formats, EVOLVE-BLOCK enforcement, GP operators."""
