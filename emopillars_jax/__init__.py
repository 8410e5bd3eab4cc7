"""Emo Pillars: JAX/Flax students for fine-grained emotion classification.

Kept import-light on purpose: `data_gen` and the CLI import the taxonomy, config and
asset modules from here without paying for JAX start-up.
"""
__version__ = "0.1.0"
