"""Structured configuration: dataclasses registered with Hydra's ConfigStore."""
