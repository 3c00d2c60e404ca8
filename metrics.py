"""The metrics, as plain functions: accuracy from counts, the harmonic mean of base-to-novel.

They live in the library (qlora_clip/evaluation/metrics.py), which computes every number a results
line holds; this module is where a notebook or script imports them from.
"""
from qlora_clip.evaluation.metrics import accuracy_percent, count_correct, harmonic_mean

__all__ = ["accuracy_percent", "count_correct", "harmonic_mean"]
