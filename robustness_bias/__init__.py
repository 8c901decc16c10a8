"""Audit image classifiers for robustness bias."""
