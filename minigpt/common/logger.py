"""Run logging: a JSON-lines metrics file and the console logger set-up (rank 0 speaks)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Dict, Optional

from minigpt.common.dist_utils import is_main_process


class TqdmLoggingHandler(logging.StreamHandler):
    """A console handler that writes through ``tqdm.write``: a log line clears the progress bars,
    takes a line of its own and the bars are drawn again under it, instead of splicing into a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise; the handler reports it as logging does
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Console logging for the command lines: through tqdm (see :class:`TqdmLoggingHandler`), rank 0 at ``level``."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = TqdmLoggingHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    # called before the process group exists, so read the rank torchrun gives each process
    rank0 = is_main_process() and int(os.environ.get("RANK", "0")) == 0
    root.setLevel(level if rank0 else logging.WARNING)
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class MetricsLogger:
    """Appends one JSON object per line to ``metrics.jsonl``; only rank 0 writes."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path if is_main_process() else None
        self._fh = None
        if self.path:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._fh = open(self.path, "a", buffering=1)

    def log(self, row: Dict[str, Any]) -> None:
        if self._fh is None:
            return
        row = {"time": round(time.time(), 3), **row}
        self._fh.write(json.dumps(row, default=float) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
