"""``python -m minigpt.datasets list|check``: the dataset catalogue (see :mod:`minigpt.datasets.catalog`).

The synthetic generator keeps its own entry point, ``python -m minigpt.datasets.synthetic``.
"""

from minigpt.datasets.catalog import main

if __name__ == "__main__":
    raise SystemExit(main())
