"""Dataset builders and generators for the real on-disk formats the models train on."""
