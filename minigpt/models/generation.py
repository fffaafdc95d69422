"""Generation helpers the model and the chat share: stop handling on the model's own tokenizer, streaming.

Stopping uses the ids and strings of the tokenizer the model actually has: its EOS id and the
template's stop strings, which transformers' ``StopStringCriteria`` matches on that tokenizer's
vocabulary (a stop string may be split over several tokens or share a token with other text).
TinyGPT-V's demo stopped on the LLaMA id ``2``, which in Phi-2's vocabulary is ``#``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from transformers import StoppingCriteria


class CancelCriteria(StoppingCriteria):
    """Ends every sequence once ``event`` is set: a streamed generation the reader abandoned stops early."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _stop_start(text: str, stops: Sequence[str]) -> tuple[int, bool]:
    """Where the earliest stop string (complete, or begun at the very end) starts; whether it is complete."""
    full = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if full >= 0:
        return full, True
    start = len(text)
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):  # the longest partial match starts earliest
            if text.endswith(s[:n]):
                start = min(start, len(text) - n)
                break
    return start, False


def trim_stream(pieces: Iterable[str], stop_strings: Sequence[str]) -> Iterator[str]:
    """The pieces of a streamed answer, cut where a stop string starts and stripped like the full answer.

    ``"".join(trim_stream(p, stops)) == cut_at_stop("".join(p), stops)``: text that may still turn
    into a stop string, and trailing whitespace, are held back until the following text decides.
    """
    stops = [s for s in stop_strings if s]
    text, sent = "", 0  # everything received; characters of the stripped answer already yielded
    for piece in pieces:
        text += piece
        end, complete = _stop_start(text, stops)
        settled = text[:end].strip()
        if len(settled) > sent:
            yield settled[sent:]
            sent = len(settled)
        if complete:
            return
    end, complete = _stop_start(text, stops)
    final = (text[:end] if complete else text).strip()  # a stop string begun but never finished is text
    if len(final) > sent:
        yield final[sent:]


def stream_in_thread(
    run: Callable[[Dict[str, Any]], Any],
    generate_kwargs: Dict[str, Any],
    tokenizer: Any,
    stop_strings: Sequence[str],
    timeout: Optional[float] = None,
) -> Iterator[str]:
    """Run ``run(generate_kwargs)`` (transformers' ``generate``) in a thread; yield its answer's text pieces.

    The pieces come from a ``TextIteratorStreamer`` through :func:`trim_stream`. An error in the
    thread is raised here; closing the iterator early stops the generation at its next token.
    """
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
    cancel = threading.Event()
    criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
    criteria.append(CancelCriteria(cancel))
    kwargs = {**generate_kwargs, "streamer": streamer, "stopping_criteria": criteria}
    errors: List[BaseException] = []

    def target() -> None:
        try:
            run(kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread, which re-raises it
            errors.append(e)
            streamer.end()

    ended = False

    def received() -> Iterator[str]:
        nonlocal ended
        yield from streamer
        ended = True  # the end signal is consumed; iterating the streamer again would wait forever

    thread = threading.Thread(target=target, name="minigpt-generate", daemon=True)
    thread.start()
    try:
        yield from trim_stream(received(), stop_strings)
    finally:
        cancel.set()
        if not ended:
            for _ in streamer:  # the generation stops at its next token; read up to its end signal
                pass
        thread.join()
    if errors:
        raise errors[0]
