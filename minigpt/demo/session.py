"""The demo's behaviour without its page: one conversation per visitor, answers streamed, boxes drawn.

:class:`DemoChat` holds the model (one per server) and turns a visitor's inputs (image or video
file, message, task shortcut, generation controls) into :class:`Reply` objects, several per answer while
it streams. The visitor's state is a small :class:`Conversation` (the image and the turns so far)
kept by the front end, so one model serves every visitor and nothing model-sized is copied per
session. Bad input never raises: it comes back as a reply whose ``error`` the page shows.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from PIL import Image
from torchvision.transforms.functional import to_pil_image

from minigpt.common.constants import DREAM_TOKEN
from minigpt.common.grounding import TASK_TAGS, LabelledBox, draw_boxes, parse_boxes, split_task_tag
from minigpt.common.precision import autocast
from minigpt.demo.inputs import DemoInputError, UploadLimits, compose_prompt, image_key, load_image
from minigpt.demo.video_input import load_video, video_key
from minigpt.models.generation.chat import Chat, video_eval_processor

logger = logging.getLogger(__name__)

MIN_BOXES_SIDE = 384  # boxes are drawn on a copy at least this large, so labels stay legible
MIN_DRAWING_SIDE = 256  # a drawn image is shown at least this large (a tiny model draws 16 px)


@dataclass
class Conversation:
    """One visitor's conversation: the image or video it is about and the ``(question, answer)`` turns so far.

    ``source`` identifies the upload the image (video) was read from (path, size, modification
    time), so the same file is not decoded again on every turn; ``key`` identifies its pixels, so a
    new upload of another picture starts a new conversation. ``video`` holds a video's sampled
    frames ``[T, 3, H, W]`` (the model's input, small) and ``video_seconds`` its length.
    """

    image: Optional[Image.Image] = None
    video: Optional[Any] = None
    video_seconds: float = 0.0
    key: Optional[str] = None
    source: Optional[Tuple[str, int, int]] = None
    turns: List[Tuple[str, str]] = field(default_factory=list)
    # (turn index, image) of every image the model drew, in order (models that draw: dreamllm)
    drawings: List[Tuple[int, Image.Image]] = field(default_factory=list)


@dataclass
class Reply:
    """What the page shows after (part of) an answer.

    ``messages`` is the chat history in the ``{"role", "content"}`` form, text escaped for the
    page's Markdown, and each image the model drew as an assistant message whose content is the
    ``PIL.Image`` (the page shows it in the chat); ``boxes_image`` the image with the last answer's boxes (None when it has
    none); ``status`` a line for the visitor (an error explains what to do); ``done`` is False
    while an answer is still streaming.
    """

    conversation: Conversation
    messages: List[Dict[str, str]]
    boxes_image: Optional[Image.Image] = None
    status: str = ""
    error: bool = False
    done: bool = True


def _source_of(path: str) -> Optional[Tuple[str, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def as_display_text(text: str) -> str:
    """Model or user text for a Markdown chat view: ``<p>``, ``<delim>`` and ``{<12>...}`` stay visible."""
    return html.escape(text, quote=False)


class DemoChat:
    """The demo's conversations with one model (not registered; ``demo.py`` builds one per server).

    ``max_new_tokens`` and ``num_beams`` are the defaults, ``max_new_tokens_limit`` and ``max_beams`` bound
    what a visitor may ask for, ``limits`` bound uploads. Answers are streamed piece by piece with
    one beam; with several beams the whole answer arrives at once (beam search cannot stream).
    ``text_only``: a question asked without an image is answered as a text-only question (a model
    built for both, e.g. ``lavin``); otherwise the demo asks for an image first.
    """

    def __init__(
        self,
        model: Any,
        limits: Optional[UploadLimits] = None,
        max_new_tokens: int = 64,
        max_new_tokens_limit: int = 512,
        max_beams: int = 5,
        max_temperature: float = 2.0,
        num_beams: int = 1,
        precision: str = "fp32",
        text_only: bool = False,
        image_last_tags: Sequence[str] = (),
    ) -> None:
        if not 1 <= max_new_tokens <= max_new_tokens_limit:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} must lie between 1 and max_new_tokens_limit={max_new_tokens_limit}"
            )
        self.model = model
        self.precision = precision  # run.precision: the autocast answers are computed under
        self.limits = limits if limits is not None else UploadLimits()
        self.max_new_tokens = int(max_new_tokens)
        self.max_new_tokens_limit = int(max_new_tokens_limit)
        self.max_beams = int(max_beams)
        self.max_temperature = float(max_temperature)
        if not 1 <= num_beams <= max_beams:
            raise ValueError(f"num_beams={num_beams} must lie between 1 and max_beams={max_beams}")
        self.num_beams = int(num_beams)
        self.text_only = bool(text_only)
        self.image_last_tags = tuple(image_last_tags)  # questions with these tags go before the image
        # a model that draws answers through generate_with_images: its drawings appear in the chat
        self.can_draw = callable(getattr(model, "generate_with_images", None))
        # built once: the processor is the preset's eval one, the same for every conversation
        self.vis_processor = Chat(model).vis_processor
        if self.vis_processor is None:
            raise ValueError(
                "the model config names no eval image processor (model.preprocess.vis_processor.eval)"
            )
        # None: this preset names no video processor, and video uploads are refused with that reason
        self.video_processor = video_eval_processor(model)

    # -- images ----------------------------------------------------------------------------------
    def read_image(
        self, conversation: Optional[Conversation], path: Optional[str]
    ) -> Tuple[Conversation, str]:
        """The conversation about the image at ``path``: ``conversation`` itself when it is the same
        image, else a new one (with a note saying so when turns are left behind).

        Raises :class:`DemoInputError` for a missing or unusable image. With ``text_only``, no image
        is a text-only conversation (a new one when the last was about an image).
        """
        conversation = conversation or Conversation()
        if path is None:
            if not self.text_only:
                raise DemoInputError("Upload an image first (or a video): the demo answers questions about one.")
            if conversation.image is None and conversation.video is None:
                return conversation, ""
            return Conversation(), "No image: started a new conversation without one."
        source = _source_of(str(path))
        if source is not None and source == conversation.source and conversation.image is not None:
            return conversation, ""
        image = load_image(path, self.limits)
        key = image_key(image)
        if key == conversation.key:
            return dataclasses.replace(conversation, source=source), ""
        note = "New image: started a new conversation." if conversation.turns else ""
        return Conversation(image=image, key=key, source=source), note

    def read_video(self, conversation: Optional[Conversation], path: str) -> Tuple[Conversation, str]:
        """The conversation about the video at ``path``: ``conversation`` itself when it is the same
        clip, else a new one. Raises :class:`DemoInputError` for an unusable video."""
        conversation = conversation or Conversation()
        if self.video_processor is None:
            raise DemoInputError(
                "This model takes no video: its config names no video processor (model.preprocess.video_processor)."
            )
        source = _source_of(str(path))
        if source is not None and source == conversation.source and conversation.video is not None:
            return conversation, ""
        frames, seconds = load_video(path, self.video_processor, self.limits)
        key = video_key(frames)
        if key == conversation.key:
            return dataclasses.replace(conversation, source=source), ""
        note = "New video: started a new conversation." if conversation.turns else ""
        return Conversation(video=frames, video_seconds=seconds, key=key, source=source), note

    def read_media(
        self, conversation: Optional[Conversation], image_path: Optional[str], video_path: Optional[str]
    ) -> Tuple[Conversation, str]:
        """:meth:`read_video` when a video is given, else :meth:`read_image`; both at once is refused."""
        if video_path is None:
            return self.read_image(conversation, image_path)
        if image_path is not None:
            raise DemoInputError("Give an image or a video, not both: remove one of them.")
        return self.read_video(conversation, video_path)

    def on_video(self, conversation: Optional[Conversation], path: Optional[str]) -> Reply:
        """The reply to a video being uploaded, replaced or removed (before any question)."""
        if path is None:
            return Reply(Conversation(), [])
        try:
            conversation, note = self.read_video(conversation, path)
        except DemoInputError as exc:
            return Reply(Conversation(), [], status=str(exc), error=True)
        frames = conversation.video.shape[0]
        status = note or (
            f"Video ready ({conversation.video_seconds:.1f} s, {frames} frames sampled). Ask a question about it."
        )
        return Reply(conversation, self.messages(conversation), status=status)

    def on_image(self, conversation: Optional[Conversation], path: Optional[str]) -> Reply:
        """The reply to an image being uploaded, replaced or removed (before any question)."""
        if path is None:
            return Reply(Conversation(), [])
        try:
            conversation, note = self.read_image(conversation, path)
        except DemoInputError as exc:
            return Reply(Conversation(), [], status=str(exc), error=True)
        w, h = conversation.image.size
        status = note or f"Image ready ({w}x{h}). Ask a question, or pick a task shortcut."
        return Reply(conversation, self.messages(conversation), status=status)

    # -- answers ---------------------------------------------------------------------------------
    def _generation_kwargs(self, temperature: Any, num_beams: Any, max_new_tokens: Any) -> Dict[str, Any]:
        try:
            temperature = float(temperature if temperature is not None else 0.0)
            num_beams = int(num_beams if num_beams is not None else self.num_beams)
            max_new_tokens = int(max_new_tokens if max_new_tokens is not None else self.max_new_tokens)
        except (TypeError, ValueError) as exc:
            raise DemoInputError(f"The generation settings are not numbers ({exc}).") from exc
        if not math.isfinite(temperature) or not 0.0 <= temperature <= self.max_temperature:
            raise DemoInputError(f"Temperature must lie between 0 and {self.max_temperature:g}.")
        if not 1 <= num_beams <= self.max_beams:
            raise DemoInputError(f"Beams must lie between 1 and {self.max_beams}.")
        if not 1 <= max_new_tokens <= self.max_new_tokens_limit:
            raise DemoInputError(f"Max new tokens must lie between 1 and {self.max_new_tokens_limit}.")
        kwargs: Dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_beams": num_beams}
        if temperature > 0:  # 0 means greedy: the most likely token at each step
            kwargs.update(do_sample=True, temperature=temperature)
        return kwargs

    def _chat(self, conversation: Conversation) -> Chat:
        """A ``Chat`` holding the conversation so far: the image, then each past turn as it went."""
        chat = Chat(
            self.model, vis_processor=self.vis_processor, require_image=not self.text_only,
            video_processor=self.video_processor, image_last_tags=self.image_last_tags,
        )  # fmt: skip
        if conversation.image is not None:
            chat.upload_image(conversation.image)
        elif conversation.video is not None:
            chat.upload_video(conversation.video)
        for question, answer in conversation.turns:
            chat.ask(question)
            chat.answers.append(answer)  # replayed, not regenerated: the answer the visitor saw
        return chat

    def respond(
        self,
        conversation: Optional[Conversation],
        image_path: Optional[str],
        message: Optional[str],
        task: Optional[str] = None,
        temperature: Any = 0.0,
        num_beams: Any = None,
        max_new_tokens: Any = None,
        video_path: Optional[str] = None,
    ) -> Iterator[Reply]:
        """Answer ``message`` about the image at ``image_path`` (or the video at ``video_path``): replies
        while the answer streams, then a final one.

        Input problems (no image, bad image or video, both at once, empty message, settings out of range, a question too
        long for the model's context) end in one reply with ``error`` set and the conversation as it
        was; a failure inside the model likewise, after logging it.
        """
        conversation = conversation or Conversation()
        try:
            prompt = compose_prompt(message, task)
            gen = self._generation_kwargs(temperature, num_beams, max_new_tokens)
            conversation, note = self.read_media(conversation, image_path, video_path)
            chat = self._chat(conversation)
            chat.ask(prompt)
            chat.model_inputs(max_new_tokens=gen["max_new_tokens"])  # a question past the context fails here
        except (DemoInputError, ValueError) as exc:
            yield Reply(conversation, self.messages(conversation), status=str(exc), error=True)
            return

        text = ""
        drawn: List[Image.Image] = []
        started = time.perf_counter()
        try:
            # no torch.no_grad() here: a front end may resume this generator on another thread, and
            # grad mode is per thread; generate and stream_generate switch gradients off themselves
            if self.can_draw:
                yield Reply(conversation, self.messages(conversation, (prompt, "")), done=False)
                gen.pop("num_beams", None)
                with autocast(self.precision, self.model.device):
                    out = chat.answer_with_images(**gen)
                text = out.text.replace(DREAM_TOKEN, "").strip()
                drawn = [self.enlarge(to_pil_image(img), MIN_DRAWING_SIDE) for img in out.images]
            elif gen["num_beams"] == 1:
                for piece in chat.stream_answer(precision=self.precision, **gen):
                    text += piece
                    yield Reply(conversation, self.messages(conversation, (prompt, text)), done=False)
            else:
                yield Reply(conversation, self.messages(conversation, (prompt, "")), done=False)
                with autocast(self.precision, self.model.device):
                    text = chat.answer(**gen)
        except Exception as exc:  # noqa: BLE001 - the server keeps serving; the visitor gets the reason
            logger.exception("generation failed for %r", prompt)
            yield Reply(
                conversation,
                self.messages(conversation),
                status=f"The model failed on this request: {exc}",
                error=True,
            )
            return
        seconds = time.perf_counter() - started
        turn = len(conversation.turns)
        conversation = dataclasses.replace(conversation, turns=[*conversation.turns, (prompt, text)],
                                           drawings=[*conversation.drawings, *[(turn, im) for im in drawn]])
        boxes = self.answer_boxes(prompt, text)
        boxes_image = self.draw(conversation.image, boxes) if boxes and conversation.image is not None else None
        parts = [note] if note else []
        if boxes:
            parts.append(f"{len(boxes)} box{'es' if len(boxes) > 1 else ''} drawn.")
        if drawn:
            parts.append(f"{len(drawn)} image{'s' if len(drawn) > 1 else ''} generated.")
        if not text and not drawn:
            parts.append("The model gave an empty answer.")
        parts.append(f"Answered in {seconds:.1f} s.")
        yield Reply(conversation, self.messages(conversation), boxes_image, " ".join(parts))

    # -- views -----------------------------------------------------------------------------------
    @staticmethod
    def messages(
        conversation: Conversation, pending: Optional[Tuple[str, str]] = None
    ) -> List[Dict[str, Any]]:
        """The chat history as ``{"role", "content"}`` messages (a drawn image's content is the image),
        plus a ``pending`` turn still streaming."""
        out: List[Dict[str, Any]] = []
        for i, (question, answer) in enumerate([*conversation.turns, *([pending] if pending else [])]):
            out.append({"role": "user", "content": as_display_text(question)})
            if answer or not any(t == i for t, _ in conversation.drawings):
                out.append({"role": "assistant", "content": as_display_text(answer)})
            out.extend({"role": "assistant", "content": image} for t, image in conversation.drawings if t == i)
        return out

    @staticmethod
    def answer_boxes(prompt: str, answer: str) -> List[LabelledBox]:
        """The boxes to draw for an answer: its own, or for ``[identify]`` the asked box named by the answer."""
        boxes = parse_boxes(answer)
        if not boxes and split_task_tag(prompt)[0] == TASK_TAGS["identify"]:
            label = answer.strip()
            label = label if len(label) <= 40 else label[:39] + "…"
            boxes = [(label or None, box) for _, box in parse_boxes(prompt)[:1]]
        if len(boxes) > 1 and all(label is None for label, _ in boxes):
            boxes = [(str(i + 1), box) for i, (_, box) in enumerate(boxes)]  # numbered in the answer's order
        return boxes

    @staticmethod
    def draw(image: Image.Image, boxes: Sequence[LabelledBox]) -> Image.Image:
        """``image`` with ``boxes`` (0-100 grid) drawn, enlarged by a whole factor when small (pixels kept sharp)."""
        return draw_boxes(DemoChat.enlarge(image, MIN_BOXES_SIDE), boxes, grid=True)

    @staticmethod
    def enlarge(image: Image.Image, side: int) -> Image.Image:
        """``image`` enlarged by the smallest whole factor that makes its longest side at least ``side`` (pixels kept sharp)."""
        factor = max(1, math.ceil(side / max(image.size)))
        if factor > 1:
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
        return image
