"""Runners: the training loop and everything around it (data loading, checkpoints, logging)."""
