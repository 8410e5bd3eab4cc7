"""Downstream benchmarks: readers of their official files (adapters), scores (metrics),
the GoEmotions download (download) and the paper's fine-tuning protocol (runner).

Import-light: submodules are imported where used.
"""
NAMES = ("goemotions", "isear", "emocontext", "meld", "iemocap")
