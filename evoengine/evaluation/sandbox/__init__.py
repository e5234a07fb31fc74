"""Sandbox backends: run untrusted candidate code and bring back raw outputs."""
