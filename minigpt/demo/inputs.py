"""What the demo accepts from a user: an image file within limits and a question, with a task tag.

(Video uploads are checked in :mod:`minigpt.demo.video_input`, against the same :class:`UploadLimits`.)

Everything here turns bad input into a :class:`DemoInputError` whose message the UI shows as is,
so a wrong upload or an empty message gets an explanation and the server carries on. No gradio
import: these checks are plain functions, testable and usable by any front end.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from minigpt.common.constants import VIDEO_TOKEN
from minigpt.common.grounding import TASK_TAGS, parse_box, split_task_tag
from minigpt.common.image_decode import load_whole

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024  # a large phone photo is 5-12 MB
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # 8,000 x 6,000 (a 48-megapixel sensor) fits
DEFAULT_MAX_SIDE = 1024  # the kept copy's longest side: the model sees 64-448 px, the page a preview
DEFAULT_MAX_MESSAGE_CHARS = 2000
DEFAULT_MAX_VIDEO_BYTES = 100 * 1024 * 1024  # a minute of 1080p phone video is 100-150 MB
DEFAULT_MAX_VIDEO_SECONDS = 300  # the model sees a few frames sampled over the whole clip
DEFAULT_MAX_VIDEO_FRAME_PIXELS = 3840 * 2160  # 4K frames fit

# MiniGPT-v2's task shortcuts the demo offers, in the order the UI lists them.
DEMO_TASKS: Tuple[str, ...] = ("vqa", "caption", "refer", "grounding", "identify")
NO_TASK = "chat"  # the shortcut that adds no tag: the message goes to the model as typed
# the shortcut of models that draw (dreamllm): the message becomes a drawing request, "draw <message>"
DRAW_TASK = "draw"
DRAW_VERBS = ("draw", "paint", "make a picture", "create an image")

# Tasks whose instruction the tag alone implies; an empty message with them asks this. The first
# prompt of the prompt files the datasets train these tasks with, so the wording is one the model saw.
_DEFAULT_PROMPT_FILES: Dict[str, str] = {"caption": "caption.txt", "grounding": "grounded_caption.txt"}

# What a user types after each tag (placeholders in the UI, and the hint of an error).
TASK_HINTS: Dict[str, str] = {
    NO_TASK: "ask anything about the image",
    "vqa": "a question with a short answer, e.g. what color is the circle?",
    "caption": "leave empty for a short caption, or say what to describe",
    "refer": "an object to find, e.g. give me the location of the red circle",
    "grounding": "leave empty for a description with a box after each object",
    "identify": "a box on the 0-100 grid, e.g. what is this {<10><20><50><60>}",
    DRAW_TASK: "what to draw, e.g. a red circle in the top left",
}


def image_last_tags(tasks: Sequence[str], key: str = "run.image_last_tasks") -> Tuple[str, ...]:
    """The task tags of ``tasks`` (names such as ``identify``) whose questions go before the image.

    Raises ``ValueError`` naming ``key`` for a name that is not a task tag.
    """
    unknown = [t for t in tasks if t not in TASK_TAGS]
    if unknown:
        raise ValueError(f"{key}: unknown task {unknown[0]!r}; the tasks are {', '.join(TASK_TAGS)}")
    return tuple(TASK_TAGS[t] for t in tasks)


class DemoInputError(ValueError):
    """Input the demo cannot take: an unreadable or oversized upload, an empty or malformed message.

    The message is written for the person at the browser and is shown to them as is.
    """


@dataclass(frozen=True)
class UploadLimits:
    """Limits on one uploaded image or video.

    Images: ``max_bytes`` and ``max_pixels`` refuse an upload (the pixel limit also stops a small
    file that decodes to a huge image before it is decoded); ``max_side`` shrinks what is kept,
    which the model's own processor then resizes to its input size. Videos: ``max_video_bytes``
    (file size), ``max_video_frame_pixels`` (the frame size the container declares, checked before
    decoding) and ``max_video_seconds`` (length) refuse an upload.
    """

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_side: int = DEFAULT_MAX_SIDE
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS
    max_video_frame_pixels: int = DEFAULT_MAX_VIDEO_FRAME_PIXELS

    def __post_init__(self) -> None:
        seconds = self.max_video_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"UploadLimits.max_video_seconds must be a positive number, got {seconds!r}")
        for name in ("max_bytes", "max_pixels", "max_side", "max_video_bytes", "max_video_frame_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"UploadLimits.{name} must be a positive int, got {value!r}")


def megabytes(n: float) -> str:
    """``n`` bytes for a person: ``12.3 MB``."""
    return f"{n / (1024 * 1024):.1f} MB"


def megapixels(n: float) -> str:
    """``n`` pixels for a person: ``8.3 megapixels``."""
    return f"{n / 1e6:.1f} megapixels"


def unreadable_upload(name: str, exc: OSError) -> DemoInputError:
    """The refusal of an upload ``name`` the server cannot read."""
    return DemoInputError(f"The upload {name} cannot be read ({exc.strerror or exc}); upload it again.")


def uploaded_file(path: Optional[PathLike], kind: str, missing: str) -> Tuple[str, str, int]:
    """``(path, file name, size in bytes)`` of a readable, non-empty upload of a ``kind`` ("image", "video").

    Refuses with the message ``missing`` when there is no file, and names the file when it cannot
    be read or is empty.
    """
    if path is None or (isinstance(path, str) and not path.strip()):
        raise DemoInputError(missing)
    path = os.fspath(path)
    name = os.path.basename(path) or path
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise unreadable_upload(name, exc) from exc
    if size == 0:
        raise DemoInputError(f"The upload {name} is empty (0 bytes); upload the {kind} again.")
    return path, name, size


# PIL raises these for a file whose header reads but whose data does not decode.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def load_image(path: Optional[PathLike], limits: Optional[UploadLimits] = None) -> Image.Image:
    """The uploaded file at ``path`` as an RGB image no larger than ``limits.max_side``.

    Refuses, with a :class:`DemoInputError` naming the file: no file, an empty or unreadable file,
    one over ``limits.max_bytes``, one that is not an image, one over ``limits.max_pixels`` (checked
    from the header, before decoding) and one that does not decode (truncated, corrupt). EXIF
    rotation is applied and transparency is laid over white, so the model sees what a viewer shows.
    """
    limits = limits if limits is not None else UploadLimits()
    path, name, size = uploaded_file(
        path, "image", "Upload an image first: the demo answers questions about an image."
    )
    if size > limits.max_bytes:
        raise DemoInputError(
            f"{name} is {megabytes(size)}; this demo takes images up to {megabytes(limits.max_bytes)}. "
            "Upload a smaller file."
        )
    try:
        with warnings.catch_warnings():
            # PIL warns past its own pixel limit; ours is checked just below with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError as exc:
        raise DemoInputError(
            f"{name} is not an image this demo can read. Upload a JPEG, PNG, WebP, BMP or GIF file."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise DemoInputError(
            f"{name} is too large to decode safely ({exc}); this demo takes images up to "
            f"{megapixels(limits.max_pixels)}."
        ) from exc
    except _DECODE_ERRORS as exc:
        raise DemoInputError(f"{name} cannot be opened as an image ({exc}); it may be corrupt.") from exc
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise DemoInputError(f"{name} has no pixels ({width}x{height}); upload another image.")
        if width * height > limits.max_pixels:
            raise DemoInputError(
                f"{name} is {width}x{height} ({megapixels(width * height)}); this demo takes images up to "
                f"{megapixels(limits.max_pixels)}. Upload a smaller image."
            )
        try:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale: a large photo then costs a fraction of the time
            image.draft("RGB", (limits.max_side, limits.max_side))
            load_whole(image)  # truncated is corrupt, whatever PIL's global setting
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
        except _DECODE_ERRORS as exc:
            raise DemoInputError(
                f"{name} is an image file but cannot be decoded ({exc}); it may be truncated or corrupt."
            ) from exc
    rgb.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BICUBIC)
    return rgb


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid over white (a plain ``convert`` would turn it black)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")


def image_key(image: Image.Image) -> str:
    """A digest of the pixels: the same picture uploaded again is the same conversation's image."""
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=None)
def default_prompt(task: str) -> Optional[str]:
    """The instruction an empty message stands for with ``task`` (None when the task needs text)."""
    filename = _DEFAULT_PROMPT_FILES.get(task)
    if filename is None:
        return None
    from minigpt.datasets.datasets.base_dataset import load_prompts

    return load_prompts(os.path.join("prompts", filename))[0]


def draw_prompt(message: Optional[str], max_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> str:
    """The ``draw`` shortcut: ``message`` as a drawing request (``draw <message>`` unless it already asks to draw)."""
    text = (message or "").strip()
    if not text:
        raise DemoInputError(f"Type what to draw first ({TASK_HINTS[DRAW_TASK]}).")
    if len(text) > max_chars:
        raise DemoInputError(f"The message is {len(text)} characters long; keep it under {max_chars}.")
    if "<ImageHere>" in text or "<Img>" in text:
        raise DemoInputError("Leave <Img><ImageHere></Img> out of the message: the demo places the image itself.")
    return text if text.lower().startswith(DRAW_VERBS) else f"draw {text}"


def compose_prompt(
    message: Optional[str], task: Optional[str] = None, max_chars: int = DEFAULT_MAX_MESSAGE_CHARS
) -> str:
    """The user's ``message`` as the model should read it: with the ``task`` shortcut's tag in front.

    ``task`` is one of :data:`DEMO_TASKS`, :data:`DRAW_TASK` (a drawing request, :func:`draw_prompt`), or
    None / :data:`NO_TASK` for the message as typed. A
    message that already starts with a task tag keeps its own. An empty message is refused unless
    the task implies the instruction (``caption``, ``grounding``); ``identify`` needs a box in the
    message. Every refusal is a :class:`DemoInputError`.
    """
    if task == DRAW_TASK:
        return draw_prompt(message, max_chars)
    if task in (None, "", NO_TASK):
        task = None
    elif task not in DEMO_TASKS:
        raise DemoInputError(f"Unknown task {task!r}; pick one of: {', '.join((NO_TASK,) + DEMO_TASKS)}.")
    text = (message or "").strip()
    if len(text) > max_chars:
        raise DemoInputError(f"The message is {len(text)} characters long; keep it under {max_chars}.")
    if "<ImageHere>" in text or "<Img>" in text or VIDEO_TOKEN in text:
        raise DemoInputError(
            "Leave <Img><ImageHere></Img> and <VideoHere> out of the message: the demo places the image itself "
            "(or the video)."
        )
    tag, rest = split_task_tag(text)
    if tag is not None:  # a tag the user typed wins over the shortcut
        task = next(name for name, t in TASK_TAGS.items() if t == tag)
        text = rest.strip()
    if not text:
        text = default_prompt(task) if task else None
        if text is None:
            hint = TASK_HINTS.get(task or NO_TASK, "some text after the tag")
            raise DemoInputError(f"Type a message first ({hint}).")
    if task == "identify" and parse_box(text) is None:
        raise DemoInputError(
            "[identify] names what is inside a box: write the box on the 0-100 grid, e.g. "
            "what is this {<10><20><50><60>}"
        )
    return f"{TASK_TAGS[task]} {text}" if task else text
