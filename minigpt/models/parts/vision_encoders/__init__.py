"""Vision encoders: image -> a sequence of visual tokens ``[B, N, C]``."""
