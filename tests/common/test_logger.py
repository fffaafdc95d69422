"""Console logging goes through tqdm: a log line gets a line of its own instead of splicing into a progress bar."""

from __future__ import annotations

import io
import logging

from tqdm import tqdm

from minigpt.common.logger import TqdmLoggingHandler, setup_logging


def _bar_then_log(handler_class) -> str:
    buf = io.StringIO()
    logger = logging.getLogger(f"minigpt.test_logger.{handler_class.__name__}")
    logger.propagate = False
    handler = handler_class(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        bar = tqdm(total=10, file=buf, desc="stage 1/2 stage1", mininterval=0, ascii=True, ncols=60)
        bar.update(4)
        logger.info("evaluation at step 4")
        bar.update(2)
        bar.close()
    finally:
        logger.removeHandler(handler)
    return buf.getvalue()


def test_a_log_line_takes_its_own_line_and_the_bar_is_redrawn():
    text = _bar_then_log(TqdmLoggingHandler)
    line = next(line for line in text.split("\n") if "evaluation at step 4" in line)
    assert line.rsplit("\r", 1)[-1] == "INFO evaluation at step 4"  # the bar was cleared first
    after = text.split("evaluation at step 4", 1)[1]
    assert "stage 1/2 stage1:  40%" in after and "6/10" in after  # drawn again below, then advanced


def test_a_plain_stream_handler_would_splice_into_the_bar():
    # what the handler prevents: the message lands on the bar's line
    text = _bar_then_log(logging.StreamHandler)
    line = next(line for line in text.split("\n") if "evaluation at step 4" in line)
    assert "stage 1/2 stage1" in line.rsplit("\r", 1)[-1]


def test_setup_logging_installs_the_tqdm_handler():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        setup_logging()
        assert [type(h) for h in root.handlers] == [TqdmLoggingHandler]
    finally:
        root.handlers, root.level = saved, level
