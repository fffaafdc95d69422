"""The benchmark metrics live in :mod:`minigpt.tasks.evaluation.metrics`, where in-training evaluation can
import them; this name is the same module, kept so ``from minigpt.evaluation import metrics`` still works."""

import sys

from minigpt.tasks.evaluation import metrics as _metrics

sys.modules[__name__] = _metrics
