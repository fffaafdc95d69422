import pytest

from minigpt.common.registry import registry
from minigpt.processors.text import CaptionTextProcessor


def test_registered_name():
    assert registry.get_processor_class("caption_text") is CaptionTextProcessor


def test_whitespace_normalised_case_and_punctuation_kept():
    proc = CaptionTextProcessor.from_config(None)
    assert proc("  A red Circle,\n next to\ta BLUE square!  ") == "A red Circle, next to a BLUE square!"


def test_max_words_prompt_and_lowercase():
    proc = CaptionTextProcessor.from_config(
        {"name": "caption_text", "prompt": "a picture of ", "max_words": 3, "lowercase": True}
    )
    assert proc("The Big RED dog runs") == "a picture of the big red"


def test_max_words_null_keeps_everything():
    text = " ".join(f"w{i}" for i in range(80))
    assert CaptionTextProcessor(max_words=None)(text) == text
    assert CaptionTextProcessor()(text) == " ".join(f"w{i}" for i in range(50))


def test_unknown_key_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="max_word"):
        CaptionTextProcessor.from_config({"max_word": 3})
    with pytest.raises(ValueError, match="max_words"):
        CaptionTextProcessor(max_words=0)
    with pytest.raises(TypeError, match="string"):
        CaptionTextProcessor()(["not", "a", "string"])


def _blip_caption(caption: str, max_words: int = 50) -> str:
    """LAVIS ``BlipCaptionProcessor.pre_caption``, written out from its definition."""
    import re

    caption = re.sub(r"\s{2,}", " ", re.sub(r"[.!\"()*#:;~]", " ", caption.lower()))
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


@pytest.mark.parametrize(
    "caption",
    [
        'A man (left) says: "Hi!" ~ then #waves; twice*.',
        "Two dogs.Playing in the park...",
        "St. John's church: built in 1850; restored 2001!",
        "no punctuation at all",
        "commas, hyphens - and 'quotes' stay",
        " ".join(f"w{i}." for i in range(60)),
    ],
)
def test_lowercase_and_drop_punctuation_give_blip_caption(caption):
    proc = CaptionTextProcessor.from_config(
        {"name": "caption_text", "max_words": 50, "lowercase": True, "drop_punctuation": True}
    )
    assert proc(caption) == _blip_caption(caption)


def test_drop_punctuation_alone_keeps_case_and_counts_words_after_it():
    proc = CaptionTextProcessor(max_words=3, drop_punctuation=True)
    assert proc("Dogs.Cats (and) Birds!") == "Dogs Cats and"
    assert CaptionTextProcessor(max_words=3)("Dogs.Cats (and) Birds!") == "Dogs.Cats (and) Birds!"
