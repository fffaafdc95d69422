"""Tasks: what a training step and an evaluation mean for a run."""
