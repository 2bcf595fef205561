"""Baselines of the paper (registered models)."""
