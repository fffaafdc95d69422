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
