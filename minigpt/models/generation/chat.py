"""A conversation about an image or a video with one model: what ``demo.py`` and the eval scripts share.

``Chat`` keeps the turns, puts the image (or video) slot in the right place and asks the model for answers
through the model's own template, so a chat prompt is laid out exactly as training laid out its
conversations::

    chat = Chat(model)                      # the preset's eval image processor
    chat.upload_image("photo.jpg")          # a path, a PIL image or a processed [3, H, W] tensor
    chat.ask("[vqa] What colour is the circle?")
    chat.answer(max_new_tokens=30)          # -> "red"
    chat.ask("And the square?")             # later turns refer back to the same image
    for piece in chat.stream_answer():      # the same answer, piece by piece
        print(piece, end="")
    chat.reset()
    chat.upload_video("clip.mp4")           # or a video: its frames, sampled by the preset's video processor
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from minigpt.common.constants import VIDEO_PLACEHOLDER, VIDEO_TOKEN
from minigpt.common.grounding import split_task_tag
from minigpt.models.generation.conversation import IMAGE_PROMPT, with_image, with_video

logger = logging.getLogger(__name__)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, torch.Tensor]
VideoInput = Union[str, "os.PathLike[str]", torch.Tensor]

DEFAULT_MAX_NEW_TOKENS = 300  # TinyGPT-V's and MiniGPT-4's demo default


def _eval_processor(model: Any) -> Optional[Callable[[Image.Image], torch.Tensor]]:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return None
    from minigpt.models import load_preprocess

    return load_preprocess(cfg)[0].get("eval")


def video_eval_processor(model: Any) -> Optional[Callable[[str], torch.Tensor]]:
    """The model preset's eval video processor (``model.preprocess.video_processor.eval``), or None."""
    cfg = getattr(model, "cfg", None)
    block = ((cfg.get("preprocess") or {}).get("video_processor") or {}).get("eval") if cfg is not None else None
    if block is None:
        return None
    from minigpt.common.registry import registry

    return registry.get_processor_class(block.name).from_config(block)


def _context_limit(model: Any) -> Optional[int]:
    llm = getattr(getattr(model, "llm", None), "model", None)
    config = getattr(llm, "config", None)
    return getattr(config, "max_position_embeddings", None)


class Chat:
    """A multi-turn conversation about (at most) one image or video with a MiniGPT-family model. Not registered.

    * ``upload_image`` sets the conversation's image; its slot (``<Img><ImageHere></Img>``) goes in
      front of the next question asked, normally the first, and later turns refer back to it. One
      image per conversation: ``reset()`` before talking about another. ``upload_video`` does the
      same with a video (``<Video><VideoHere></Video>``), sampled by ``video_processor`` (by default
      the preset's ``preprocess.video_processor.eval``).
    * ``image_last_tags`` (e.g. ``["[identify]"]``): a question that starts with one of these task tags
      carries the slot after its text instead, for a model trained with that order (a dataset's
      ``image_last``; the quickstart trains ``[identify]`` so).
    * Questions without any image are allowed: every family here also trains on text-only samples
      and answers them. ``require_image=True`` makes ``ask`` refuse a question before an image.
    * ``ask("")`` (or only whitespace) raises ``ValueError``; so does asking twice without
      ``answer``, and ``answer`` without a question.
    * When the conversation grows past the model's context (``max_context_tokens``, by default the
      LLM's ``max_position_embeddings``, less the tokens to generate), the oldest turns are left out
      of the prompt, never the turn with the image or the question being answered; the history
      keeps them.

    ``generation_defaults`` (``max_new_tokens=300`` unless given) are the keyword arguments of
    ``model.generate`` each answer uses unless the call overrides them.
    """

    def __init__(
        self,
        model: Any,
        vis_processor: Optional[Callable[[Image.Image], torch.Tensor]] = None,
        require_image: bool = False,
        max_context_tokens: Optional[int] = None,
        video_processor: Optional[Callable[[str], torch.Tensor]] = None,
        image_last_tags: Sequence[str] = (),
        **generation_defaults: Any,
    ) -> None:
        self.model = model
        self.image_last_tags = frozenset(image_last_tags)
        self.vis_processor = vis_processor if vis_processor is not None else _eval_processor(model)
        self.video_processor = video_processor
        self.require_image = require_image
        self.max_context_tokens = (
            max_context_tokens if max_context_tokens is not None else _context_limit(model)
        )
        self.generation_defaults: Dict[str, Any] = {
            "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
            **generation_defaults,
        }
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the image (or video) and every turn."""
        self.image: Optional[torch.Tensor] = None  # [3, H, W] processed, or a video's [T, 3, H, W] frames
        self.is_video = False
        self.questions: List[str] = []  # as asked
        self.answers: List[str] = []
        self._image_turn: Optional[int] = None  # the question that carries the image slot

    @property
    def history(self) -> List[Tuple[str, Optional[str]]]:
        """``(question, answer)`` pairs as asked and answered; the last answer is None while pending."""
        return [(q, self.answers[i] if i < len(self.answers) else None) for i, q in enumerate(self.questions)]

    @property
    def pending(self) -> bool:
        """Whether the last question awaits its answer."""
        return len(self.questions) > len(self.answers)

    # -- input ---------------------------------------------------------------------------------
    def process_image(self, image: ImageInput) -> torch.Tensor:
        """A path, PIL image or tensor as the ``[3, H, W]`` tensor the model takes."""
        if isinstance(image, torch.Tensor):
            if image.dim() == 4 and image.shape[0] == 1:
                image = image[0]
            if image.dim() != 3:
                raise ValueError(
                    f"an image tensor must be [3, H, W] (processed), got shape {tuple(image.shape)}"
                )
            return image
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image file not found: {path}")
            with Image.open(path) as f:
                image = f.convert("RGB")
        if not isinstance(image, Image.Image):
            raise TypeError(f"upload_image takes a path, a PIL image or a tensor, got {type(image).__name__}")
        if self.vis_processor is None:
            raise ValueError(
                "this Chat has no image processor (the model config names none): pass vis_processor="
            )
        return self.vis_processor(image.convert("RGB"))

    def upload_image(self, image: ImageInput) -> None:
        """Set the conversation's image; its slot goes in front of the next question asked."""
        if self.image is not None:
            raise ValueError(
                "this conversation already has an image (one per conversation): call reset() first"
            )
        self.image = self.process_image(image)

    def process_video(self, video: VideoInput) -> torch.Tensor:
        """A video file's path, or its frames ``[T, 3, H, W]`` (processed), as the frames the model takes."""
        if isinstance(video, torch.Tensor):
            if video.dim() != 4:
                raise ValueError(f"a video tensor must be [T, 3, H, W] (processed frames), got shape {tuple(video.shape)}")
            return video
        if not isinstance(video, (str, os.PathLike)):
            raise TypeError(f"upload_video takes a path or a [T, 3, H, W] tensor, got {type(video).__name__}")
        if self.video_processor is None:
            self.video_processor = video_eval_processor(self.model)
        if self.video_processor is None:
            raise ValueError(
                "this Chat has no video processor (the model config names no preprocess.video_processor.eval): "
                "pass video_processor="
            )
        return self.video_processor(os.fspath(video))

    def upload_video(self, video: VideoInput) -> None:
        """Set the conversation's video; its slot goes in front of the next question asked."""
        if self.image is not None:
            raise ValueError(
                "this conversation already has an image or a video (one per conversation): call reset() first"
            )
        self.image = self.process_video(video)
        self.is_video = True

    def ask(self, text: str) -> None:
        """Add a user turn. Raises ``ValueError`` on an empty message or while an answer is pending."""
        if not isinstance(text, str):
            raise TypeError(f"ask() takes the question as a string, got {type(text).__name__}")
        text = text.strip()
        if not text:
            raise ValueError("empty message: ask() needs a question with some text in it")
        if self.pending:
            raise ValueError("the last question has no answer yet: call answer() before asking again")
        if self.require_image and self.image is None:
            raise ValueError("this chat needs an image: call upload_image() before asking")
        if IMAGE_PROMPT in text or "<ImageHere>" in text or VIDEO_TOKEN in text:
            raise ValueError(
                f"write the question without {IMAGE_PROMPT} or {VIDEO_TOKEN}: upload_image() / upload_video() "
                "places the slot"
            )
        if self.image is not None and self._image_turn is None:
            self._image_turn = len(self.questions)
        self.questions.append(text)

    def turns(self) -> List[str]:
        """The user turns as the model reads them: the image (video) slot in front of the turn that carries
        it, or after it when the turn's task tag is one of ``image_last_tags``."""
        place = with_video if self.is_video else with_image
        slot = VIDEO_PLACEHOLDER if self.is_video else IMAGE_PROMPT

        def carrying(question: str) -> str:
            if split_task_tag(question)[0] in self.image_last_tags:
                return f"{question} {slot}"
            return place(question)

        return [carrying(q) if i == self._image_turn else q for i, q in enumerate(self.questions)]

    # -- prompt ----------------------------------------------------------------------------------
    def _visible_turns(self, max_new_tokens: int) -> List[int]:
        """Indices of the turns the next prompt shows: all, or without the oldest when over the context."""
        keep = list(range(len(self.questions)))
        if self.max_context_tokens is None:
            return keep
        budget = int(self.max_context_tokens) - int(max_new_tokens)
        dropped = 0
        while self._prompt_length(keep) > budget:
            droppable = [i for i in keep[:-1] if i != self._image_turn]
            if not droppable:
                raise ValueError(
                    f"the question does not fit the model's context: {self._prompt_length(keep)} prompt "
                    f"tokens + max_new_tokens={max_new_tokens} > {self.max_context_tokens}; ask a shorter one"
                )
            keep.remove(droppable[0])
            dropped += 1
        if dropped:
            logger.warning(
                "conversation longer than the model's context: the oldest %d turn(s) left out", dropped
            )
        return keep

    def _prompt_length(self, keep: Sequence[int]) -> int:
        return int(self._inputs(keep)["attention_mask"].sum())

    def _inputs(self, keep: Sequence[int]) -> Dict[str, torch.Tensor]:
        turns = self.turns()
        return self._generation_inputs([turns[i] for i in keep], [self.answers[i] for i in keep[:-1]])

    def _generation_inputs(self, turns: List[str], past: List[str]) -> Dict[str, torch.Tensor]:
        if not self.is_video:
            return self.model.build_generation_inputs([turns], [past])
        media = self.model.gather(self._image_batch(), self.model.layout.slot_kinds([turns]))
        return self.model.build_generation_inputs([turns], [past], self.model.media_lengths(media))

    def _request(self, gen: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str], List[str]]:
        if not self.pending:
            raise ValueError("no question to answer: call ask() first")
        kwargs = {**self.generation_defaults, **gen}
        keep = self._visible_turns(kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        turns = self.turns()
        return kwargs, [turns[i] for i in keep], [self.answers[i] for i in keep[:-1]]

    def model_inputs(self, **gen: Any) -> Dict[str, torch.Tensor]:
        """The token ids and masks the next ``answer(**gen)`` feeds the model (for checks and debugging)."""
        _, turns, past = self._request(gen)
        return self._generation_inputs(turns, past)

    def prompt_text(self, **gen: Any) -> str:
        """The next prompt as text (the template on the visible turns), ending where the answer starts."""
        _, turns, past = self._request(gen)
        return self.model.layout.prompt_text(turns, past)

    # -- answers --------------------------------------------------------------------------------
    def _image_batch(self) -> Optional[torch.Tensor]:
        return None if self.image is None or self._image_turn is None else self.image[None]

    def answer(self, **gen: Any) -> str:
        """The answer to the last question; ``model.generate`` keyword arguments override the defaults."""
        kwargs, turns, past = self._request(gen)
        text = self.model.generate(self._image_batch(), [turns], history=[past], **kwargs)[0]
        self.answers.append(text)
        return text

    def answer_with_images(self, **gen: Any) -> Any:
        """The answer to the last question from a model that draws (``generate_with_images``, e.g. ``dreamllm``):
        its text and drawn images (a ``DreamOutput``); the text is recorded in the history."""
        kwargs, turns, past = self._request(gen)
        kwargs = {k: v for k, v in kwargs.items() if k in ("max_new_tokens", "do_sample", "temperature", "top_p")}
        out = self.model.generate_with_images(self._image_batch(), [turns], history=[past], **kwargs)[0]
        self.answers.append(out.text)
        return out

    def stream_answer(self, **gen: Any) -> Iterator[str]:
        """The answer to the last question piece by piece; recorded in the history once read to the end.

        Stopping early records the part read; after an error the question stays pending. Greedy or
        sampling (no beams); see ``model.stream_generate``.
        """
        kwargs, turns, past = self._request(gen)
        pieces = self.model.stream_generate(self._image_batch(), turns, history=past, **kwargs)
        return self._record(pieces)

    def _record(self, pieces: Iterator[str]) -> Iterator[str]:
        received: List[str] = []
        failed = False
        try:
            for piece in pieces:
                received.append(piece)
                yield piece
        except GeneratorExit:  # the reader stopped early: what it read is the answer
            raise
        except BaseException:  # the question stays pending: answer() again, or reset()
            failed = True
            raise
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # stops the generation thread if it is still running
            if not failed:
                self.answers.append("".join(received))

    # -- batches for evaluation ------------------------------------------------------------------
    def _single_turn_batch(
        self, images: Optional[Sequence[Optional[ImageInput]]], questions: Sequence[str]
    ) -> Tuple[Optional[torch.Tensor], List[str]]:
        """First-turn prompts for (image, question) pairs and their images as one ``[B, 3, H, W]`` batch."""
        if images is not None and len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        prompts, tensors = [], []
        for i, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"question {i} is empty")
            img = None if images is None else images[i]
            if img is None:
                if self.require_image:
                    raise ValueError(f"question {i} has no image and this chat needs one")
                prompts.append(q.strip())
            else:
                prompts.append(with_image(q.strip()))
                tensors.append((i, self.process_image(img)))
        batch = None
        if tensors:
            shape = tensors[0][1].shape
            batch = torch.zeros((len(questions), *shape), dtype=tensors[0][1].dtype)
            for i, t in tensors:
                batch[i] = t
        return batch, prompts

    def answer_batch(
        self, images: Optional[Sequence[Optional[ImageInput]]], questions: Sequence[str], **gen: Any
    ) -> List[str]:
        """Single-turn answers to many (image, question) pairs at once, prompted as a chat's first turn.

        ``images[i]`` may be None for a text-only question. The conversation's own state is untouched.
        """
        batch, prompts = self._single_turn_batch(images, questions)
        return self.model.generate(batch, prompts, **{**self.generation_defaults, **gen})

    def continuation_logprobs(
        self, images: Optional[Sequence[Optional[ImageInput]]], questions: Sequence[str], continuations: Sequence[str]
    ) -> List[Tuple[float, bool]]:
        """``(log-likelihood, is greedy)`` of each continuation as the first-turn answer to its question
        (see :func:`minigpt.models.generation.likelihood.continuation_logprobs`)."""
        from minigpt.models.generation.likelihood import continuation_logprobs

        batch, prompts = self._single_turn_batch(images, questions)
        return continuation_logprobs(self.model, batch, prompts, continuations)
