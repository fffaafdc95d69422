"""Command-line entry points (train.py and the console scripts call these)."""
