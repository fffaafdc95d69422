"""The crash tests' launcher: ``python tests/runners/crash_launcher.py <point>@<step> <marker> <train.py args>``.

Runs what ``train.py`` runs (``minigpt.cli.train.main``) with one runner function wrapped, so the
process writes the file ``marker`` and then sleeps at ``<point>`` of ``<step>`` until the test
kills it there. Points:

* ``step``: optimizer step ``<step>`` has done its forward and backward passes
  (``StepLoop.accumulate`` returned), the optimizer has not stepped;
* ``ckpt_files``: checkpoint ``<step>``'s trained weights are in its temporary directory, nothing else;
* ``ckpt_rename``: every file of checkpoint ``<step>`` is written, the directory not yet renamed;
* ``ckpt_swap``: a re-save of ``<step>`` has renamed the existing ``step_<step>`` aside, the new
  folder is not yet moved in (the two halves of :func:`~minigpt.runners.checkpointing.move_into_place`);
* ``ckpt_latest``: checkpoint ``<step>`` is in place, ``latest`` not yet moved to it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any, Callable, List


def _park(point: str, step: int, marker: str) -> None:
    with open(marker, "w") as fh:
        fh.write(f"{point}@{step} pid {os.getpid()}\n")
    while True:  # the test kills the process here
        time.sleep(1)


def _pausing(original: Callable[..., Any], step_of: Callable[..., int], at: int, point: str, marker: str,
             after: bool) -> Callable[..., Any]:
    """``original`` that parks before (or ``after``) the call whose step (``step_of(*args)``) is ``at``."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = step_of(*args) == at
        if hit and not after:
            _park(point, at, marker)
        out = original(*args, **kwargs)
        if hit and after:
            _park(point, at, marker)
        return out

    return wrapper


def install(pause: str, marker: str) -> None:
    """Wrap the function that marks ``pause`` (``<point>@<step>``)."""
    from minigpt.runners import checkpointing
    from minigpt.runners.step_loop import StepLoop

    point, at = pause.split("@")
    step = int(at)
    if point == "step":
        # StepLoop.accumulate(self, step_index): step_index is 0-based
        StepLoop.accumulate = _pausing(StepLoop.accumulate, lambda _self, i: i + 1, step, point, marker, after=True)
    elif point == "ckpt_files":
        checkpointing.write_trained_weights = _pausing(
            checkpointing.write_trained_weights, lambda _tmp, s, *rest: s, step, point, marker, after=True)
    elif point == "ckpt_rename":
        checkpointing.move_into_place = _pausing(
            checkpointing.move_into_place, lambda _tmp, final: int(os.path.basename(final)[5:]), step, point,
            marker, after=False)
    elif point == "ckpt_swap":
        checkpointing.set_aside = _pausing(
            checkpointing.set_aside, lambda final: int(os.path.basename(final)[5:]), step, point, marker, after=True)
    elif point == "ckpt_latest":
        checkpointing.point_latest = _pausing(
            checkpointing.point_latest, lambda _root, name: int(name[5:]), step, point, marker, after=False)
    else:
        raise SystemExit(f"unknown pause point {point!r}: step, ckpt_files, ckpt_rename, ckpt_swap or ckpt_latest")


def main(argv: List[str]) -> None:
    pause, marker, *train_args = argv
    install(pause, marker)
    from minigpt.cli.train import main as train_main

    train_main(train_args)


if __name__ == "__main__":
    main(sys.argv[1:])
