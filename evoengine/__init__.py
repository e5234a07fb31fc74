"""evoengine: LLM-guided evolutionary program search."""

__version__ = "0.1.0"
