"""Generation: KV cache, batching, beams, sampling, stop handling on the model's own tokenizer, streaming."""

from __future__ import annotations

import random

import pytest
import torch
from shared_helpers import ForceTokens
from transformers import LogitsProcessor, LogitsProcessorList

from minigpt.models import load_model
from minigpt.models.generation.conversation import get_template
from minigpt.models.generation.decode import trim_stream

IMG = "<Img><ImageHere></Img>"
PROMPTS = [
    f"{IMG} [vqa] what color is the circle?",
    f"{IMG} [caption] describe this picture in a few words please, as briefly as you can",
    "hello",  # text only
    [f"{IMG} [vqa] how many shapes?", "and which colour is the largest one?"],  # second turn of a chat
]
HISTORY = [None, None, None, ["two"]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tinygptv", "tiny", is_eval=True)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(len(PROMPTS), 3, 64, 64)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _chars(tok, text):
    """``text`` as one token per character: a stop string spread over several tokens."""
    ids = [tok.convert_tokens_to_ids(c) for c in text]
    assert tok.unk_token_id not in ids
    return ids


def test_greedy_with_kv_cache_equals_without(model, images):
    with_cache = model.generate(images, PROMPTS, history=HISTORY, max_new_tokens=12, use_cache=True)
    no_cache = model.generate(images, PROMPTS, history=HISTORY, max_new_tokens=12, use_cache=False)
    assert len(with_cache) == len(PROMPTS) and any(with_cache)  # something was generated to compare
    assert with_cache == no_cache


def test_batch_of_different_lengths_equals_one_prompt_at_a_time(model, images):
    batch = model.generate(images, PROMPTS, history=HISTORY, max_new_tokens=10)
    singles = []
    for i, (p, h) in enumerate(zip(PROMPTS, HISTORY)):
        has_image = IMG in (p if isinstance(p, str) else p[0])
        singles.append(
            model.generate(images[i : i + 1] if has_image else None, [p], history=[h], max_new_tokens=10)[0]
        )
    assert batch == singles
    # the three left-padded lengths really differ, so padding was exercised
    lengths = model.build_generation_inputs(PROMPTS, HISTORY)["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == len(lengths)


def test_history_is_laid_out_as_training_lays_out_a_conversation(model):
    tok = model.tokenizer
    turns, answers = [f"{IMG} [vqa] how many shapes?", "which is left?"], ["two", "the red circle"]
    train = model.build_inputs([turns], [answers], model.num_image_tokens())
    train_ids = train["input_ids"][0][train["attention_mask"][0].bool()].tolist()
    gen = model.build_generation_inputs([turns], [answers[:1]])
    gen_ids = gen["input_ids"][0][gen["attention_mask"][0].bool()].tolist()
    # the prompt is the training sample up to where the last answer starts
    assert train_ids[: len(gen_ids)] == gen_ids
    assert train_ids[len(gen_ids) :] == _ids(tok, " " + answers[1]) + [tok.eos_token_id]
    assert gen["media_mask"].sum() == model.num_image_tokens()


def test_history_must_hold_one_answer_per_earlier_turn(model):
    with pytest.raises(ValueError, match="prompt 0: 2 instructions need the 1 earlier answers"):
        model.build_generation_inputs([["q1", "q2"]], [["a1", "a2"]])
    with pytest.raises(ValueError, match="history has 1 entries for 2 prompts"):
        model.build_generation_inputs(["a", "b"], [["x"]])


def test_beam_search_returns_one_answer_per_prompt(model, images):
    out = model.generate(images[:3], PROMPTS[:3], max_new_tokens=8, num_beams=3)
    assert len(out) == 3 and all(isinstance(a, str) for a in out)
    assert out == model.generate(images[:3], PROMPTS[:3], max_new_tokens=8, num_beams=3)  # deterministic


def test_sampling_with_a_seed_is_reproducible(model, images):
    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(
            images[:2], PROMPTS[:2], max_new_tokens=10, do_sample=True, temperature=1.5, top_p=1.0
        )

    assert sample(3) == sample(3)
    assert any(sample(s) != sample(3) for s in (4, 5, 6))  # and the seed matters


def test_stopping_uses_this_tokenizers_ids(model):
    tok = model.tokenizer
    kw = model.stopping_kwargs()
    # EOS of this tokenizer, and '###' (the template's stop string) where it is one token of this vocabulary
    assert kw["eos_token_id"] == [tok.eos_token_id] + _ids(tok, "###")
    assert kw["stop_strings"] == ["###"] and kw["tokenizer"] is tok
    assert model.stopping_kwargs(stop_strings=[])["eos_token_id"] == [tok.eos_token_id]
    assert "stop_strings" not in model.stopping_kwargs(stop_strings=[])


@pytest.mark.parametrize(
    "template, split, stop_text, n_stop",
    [
        # the next turn's marker, an added token of this tokenizer, after a space token
        ("human_assistant", False, " ###Human: what", 2),
        ("human_assistant", False, "###", 1),  # '###' is one token here
        ("human_assistant", True, "###", 3),  # '#', '#', '#': matched on the text
        ("llama2_inst", False, " [INST] what", 2),
        ("llama2_inst", True, "[INST]", 6),
        ("tinygptv_inst", True, "###", 3),  # TinyGPT-V stage 4 answers end with '###'
    ],
)
def test_generation_stops_at_the_templates_stop_string(model, images, template, split, stop_text, n_stop):
    tok = model.tokenizer
    answer = _ids(tok, " red circle")
    stop = _chars(tok, stop_text) if split else _ids(tok, stop_text)
    assert len(stop) >= n_stop
    saved = model.template
    model.template = get_template(template)
    try:
        force = ForceTokens(answer + stop + _ids(tok, " and more words after it"))
        out = model.generate(
            images[:1], PROMPTS[:1], max_new_tokens=30, logits_processor=LogitsProcessorList([force])
        )
    finally:
        model.template = saved
    assert out == ["red circle"]
    assert force.calls == len(answer) + n_stop  # it stopped on the token that completed the stop string


def test_generation_stops_at_eos_and_beams_stop_too(model, images):
    tok = model.tokenizer
    answer = _ids(tok, " red circle")
    force = ForceTokens(answer + [tok.eos_token_id] + _ids(tok, " more"))
    out = model.generate(
        images[:1], PROMPTS[:1], max_new_tokens=30, logits_processor=LogitsProcessorList([force])
    )
    assert out == ["red circle"] and force.calls == len(answer) + 1
    force = ForceTokens(answer + _chars(tok, "###") + _ids(tok, " more"))
    out = model.generate(
        images[:1], PROMPTS[:1], max_new_tokens=30, num_beams=3, logits_processor=LogitsProcessorList([force])
    )
    assert out == ["red circle"]


def test_streaming_joins_to_the_non_streamed_greedy_answer(model, images):
    n_pieces = []
    for i, (p, h) in enumerate(zip(PROMPTS, HISTORY)):
        has_image = IMG in (p if isinstance(p, str) else p[0])
        img = images[i] if has_image else None
        full = model.generate(None if img is None else img[None], [p], history=[h], max_new_tokens=16)[0]
        pieces = list(model.stream_generate(img, p, history=h, max_new_tokens=16))
        assert "".join(pieces) == full
        assert all(pieces)
        n_pieces.append(len(pieces))
    assert max(n_pieces) > 1  # it did stream


def test_streaming_cuts_the_stop_string(model, images):
    tok = model.tokenizer
    force = ForceTokens(_ids(tok, " red circle is") + _chars(tok, "###") + _ids(tok, " more"))
    pieces = list(
        model.stream_generate(
            images[0], PROMPTS[0], max_new_tokens=30, logits_processor=LogitsProcessorList([force])
        )
    )
    assert "".join(pieces) == "red circle is"
    assert len(pieces) > 1


def test_closing_a_stream_stops_the_generation(model, images):
    tok = model.tokenizer
    force = ForceTokens(_ids(tok, " red") * 3, delay=0.01)
    stream = model.stream_generate(
        images[0],
        PROMPTS[0],
        max_new_tokens=300,
        stop_strings=[],
        logits_processor=LogitsProcessorList([force]),
    )
    assert next(stream) == "red"
    stream.close()
    assert force.calls < 100  # far from the 300 tokens it would have run


def test_an_error_in_the_generation_thread_reaches_the_reader(model, images):
    class Boom(LogitsProcessor):
        def __call__(self, input_ids, scores):
            raise RuntimeError("boom in generate")

    with pytest.raises(RuntimeError, match="boom in generate"):
        list(model.stream_generate(images[0], PROMPTS[0], logits_processor=LogitsProcessorList([Boom()])))
    with pytest.raises(ValueError, match="num_beams must be 1"):
        model.stream_generate(images[0], PROMPTS[0], num_beams=3)


@pytest.mark.parametrize(
    "text",
    [
        "  red circle ### and more",
        "red # circle ## not a stop",
        "red circle##",  # a stop string begun but never finished is text
        "### at once",
        "red\n\ncircle  [INST] next",
        "   ",
    ],
)
def test_trim_stream_matches_cutting_the_whole_text(text):
    stops = ["###", "[INST]"]
    expected = get_template("human_assistant").cut_at_stop(text, stops)
    rng = random.Random(0)
    for _ in range(20):  # arbitrary splits into pieces, single characters included
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        got = list(trim_stream(pieces, stops))
        assert "".join(got) == expected
        assert all(got)
