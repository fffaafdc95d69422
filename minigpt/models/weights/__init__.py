"""Weights: trained-parameter checkpoints, released checkpoints' key maps, weight files, export, random init."""
