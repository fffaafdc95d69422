"""The library's decode loop gives exactly the tokens of transformers' ``generate``; what it hands back to it."""

from __future__ import annotations

import inspect

import pytest
import torch
from shared_helpers import ForceTokens
from transformers import LogitsProcessor, LogitsProcessorList

from minigpt.models import load_model

IMG = "<Img><ImageHere></Img>"
PROMPTS = [
    f"{IMG} [vqa] what color is the circle?",
    f"{IMG} [caption] describe this picture in a few words please, as briefly as you can",
    "hello",  # text only
    [f"{IMG} [vqa] how many shapes?", "and which colour is the largest one?"],
]
HISTORY = [None, None, None, ["two"]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tinygptv", "tiny", is_eval=True)


@pytest.fixture(scope="module")
def images():
    return torch.randn(len(PROMPTS), 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _both(model, images, prompts=PROMPTS, history=HISTORY, seed=None, processors=None, **kw):
    """Token ids from ours' loop and from transformers' generate, on the same prepared arguments.

    ``processors`` makes a fresh list of logits processors for each run (they may count calls).
    """
    do_sample = kw.pop("do_sample", False)
    temperature, top_p = kw.pop("temperature", 1.0), kw.pop("top_p", 0.9)
    repetition_penalty = kw.pop("repetition_penalty", 1.0)
    max_new = kw.pop("max_new_tokens", 16)
    stops = model.resolve_stop_strings(None)
    out = []
    for run in (model._run_lean_decode, model._run_llm_generate):
        extra = dict(kw, logits_processor=LogitsProcessorList(processors())) if processors else dict(kw)
        assert model.lean_decode_blocker(1, True, extra) is None
        args = model._generate_kwargs(
            images,
            prompts,
            history,
            stops,
            max_new,
            1,
            do_sample,
            temperature,
            top_p,
            repetition_penalty,
            True,
            extra,
        )
        if seed is not None:
            torch.manual_seed(seed)
        out.append(run(args))
    return out


def test_greedy_batch_of_different_lengths_with_and_without_images(model, images):
    lean, hf = _both(model, images, max_new_tokens=20, min_new_tokens=20)
    assert lean.shape == (len(PROMPTS), 20)
    assert torch.equal(lean, hf)
    lengths = model.build_generation_inputs(PROMPTS, HISTORY)["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(PROMPTS)  # left padding was exercised


def test_greedy_text_only_batch_and_a_single_prompt(model, images):
    for prompts, history, imgs in (
        (["hi", "what is a circle?"], None, None),
        (PROMPTS[:1], None, images[:1]),
    ):
        lean, hf = _both(model, imgs, prompts, history, max_new_tokens=12)
        assert torch.equal(lean, hf)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.3, top_p=0.8),
        dict(temperature=0.7, top_p=1.0, top_k=5),
        dict(top_p=1.0, top_k=0),  # no filtering at all
    ],
)
def test_sampling_draws_the_same_tokens_from_the_same_seed(model, images, settings):
    lean, hf = _both(model, images, seed=3, do_sample=True, max_new_tokens=12, **settings)
    assert torch.equal(lean, hf)
    other, _ = _both(model, images, seed=4, do_sample=True, max_new_tokens=12, **settings)
    assert not torch.equal(lean, other)  # and the draw is really random


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")
def test_repetition_penalty_without_padding(model, images):
    # transformers skips as many generated tokens as a row has left padding; with none both agree
    lean, hf = _both(model, images[:1], PROMPTS[:1], None, repetition_penalty=1.5, max_new_tokens=16)
    assert torch.equal(lean, hf)


@pytest.mark.parametrize("split", [False, True])
def test_stop_string_ends_rows_like_generate(model, images, split):
    tok = model.tokenizer
    words = tok(" red circle", add_special_tokens=False)["input_ids"]
    if split:  # '#', '#', '#': the stop string spread over three tokens, matched on the text
        stop = [tok.convert_tokens_to_ids(c) for c in "###"]
    else:  # '###' is one token of this vocabulary: it stops as an EOS id does
        stop = tok("###", add_special_tokens=False)["input_ids"]
    assert len(stop) == (3 if split else 1)
    more = tok(" and more", add_special_tokens=False)["input_ids"]
    lean, hf = _both(model, images, max_new_tokens=20, processors=lambda: [ForceTokens(words + stop + more)])
    n = len(words) + len(stop)
    assert lean.tolist() == [words + stop] * len(PROMPTS)  # every row stopped on the stop string's last token
    assert torch.equal(lean, hf) and lean.shape[1] == n


def test_rows_that_stop_early_are_padded_like_generate(model, images):
    tok = model.tokenizer

    class EosForRowZero(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if input_ids.shape[1] == 2:
                scores[0, :] = -1e9
                scores[0, tok.eos_token_id] = 0.0
            return scores

    lean, hf = _both(model, images, max_new_tokens=8, processors=lambda: [EosForRowZero()])
    assert torch.equal(lean, hf)
    assert lean[0, 2] == tok.eos_token_id and (lean[0, 3:] == tok.pad_token_id).all()
    assert lean.shape[1] == 8  # the other rows went on


def test_lora_on_the_tinygptv_phi_variant(images):
    torch.manual_seed(0)
    lora = load_model(
        "tinygptv", "tiny", is_eval=True, overrides={"llm": {"lora_r": 4, "phi_variant": "tinygptv"}}
    )
    assert type(lora.llm.model).__name__.startswith("Peft")
    lean, hf = _both(lora, images, max_new_tokens=12)
    assert torch.equal(lean, hf)


def test_generate_uses_the_lean_loop_by_default(model, images, monkeypatch):
    def no_hf(**kwargs):
        raise AssertionError("transformers' generate was called")

    monkeypatch.setattr(model.llm, "generate", no_hf)
    texts = model.generate(images, PROMPTS, history=HISTORY, max_new_tokens=8)
    assert len(texts) == len(PROMPTS)


def test_generate_text_is_the_same_on_both_paths(model, images):
    lean = model.generate(images, PROMPTS, history=HISTORY, max_new_tokens=16)
    model.lean_generate = False
    try:
        hf = model.generate(images, PROMPTS, history=HISTORY, max_new_tokens=16)
    finally:
        model.lean_generate = True
    assert lean == hf and any(lean)


def test_what_goes_to_transformers_generate(model):
    assert model.lean_decode_blocker(3, True, {}) == "beam search"
    assert model.lean_decode_blocker(1, False, {}) == "use_cache=False"
    assert "num_return_sequences" in model.lean_decode_blocker(1, True, {"num_return_sequences": 2})
    gen_cfg = model.llm.causal_lm.generation_config
    saved = gen_cfg.no_repeat_ngram_size
    gen_cfg.no_repeat_ngram_size = 3  # a checkpoint's generation_config.json may set it
    try:
        assert model.lean_decode_blocker(1, True, {}) == "generation_config.no_repeat_ngram_size=3"
    finally:
        gen_cfg.no_repeat_ngram_size = saved
    assert model.lean_decode_blocker(1, True, {"min_new_tokens": 3, "top_k": 4}) is None
    torch.manual_seed(0)
    off = load_model("tinygptv", "tiny", overrides={"lean_generate": False})
    assert off.lean_decode_blocker(1, True, {}) == "lean_generate is off"


def test_beam_search_still_runs_through_transformers(model, images, monkeypatch):
    calls = []
    real = model.llm.generate

    def counting(**kwargs):
        calls.append(kwargs["num_beams"])
        return real(**kwargs)

    monkeypatch.setattr(model.llm, "generate", counting)
    out = model.generate(images[:2], PROMPTS[:2], max_new_tokens=6, num_beams=2)
    assert len(out) == 2 and calls == [2]


def test_steps_share_one_cache_by_its_keyword_and_take_slices_of_one_keys_mask(model, images, monkeypatch):
    from minigpt.models.generation.decode import cache_keyword

    calls = []
    real = model.llm.forward

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(model.llm, "forward", spy)
    monkeypatch.setattr(model, "fused_decode_step", False)  # every step through the model's forward
    args = model._generate_kwargs(images, PROMPTS, HISTORY, [], 5, 1, False, 1.0, 0.9, 1.0, True, {"min_new_tokens": 5})
    model._run_lean_decode(args)
    assert len(calls) == 5  # the prompt, then one call per new token but the last
    key = cache_keyword(model.llm.causal_lm)
    # transformers' newer forwards take `cache` (past_key_values is their deprecated name); older ones only the old name
    params = inspect.signature(model.llm.causal_lm.forward).parameters
    assert key == ("cache" if "cache" in params else "past_key_values")
    assert all(key in c and c[key] is calls[0][key] for c in calls)
    assert key == "past_key_values" or not any("past_key_values" in c for c in calls)
    prompt = calls[0]["attention_mask"]  # [B, T]: padded, so transformers builds the prompt's mask once
    b, t = prompt.shape
    assert (prompt == 0).any()
    for i, c in enumerate(calls[1:]):
        m = c["attention_mask"]  # what transformers would build from the grown 2-D mask
        assert m.dtype == torch.bool and m.shape == (b, 1, 1, t + i + 1)
        assert torch.equal(m[:, 0, 0, :t], prompt.bool()) and m[:, 0, 0, t:].all()


def test_growing_cache_gives_the_same_tokens_as_the_preallocated_one(model, images):
    from minigpt.models.generation.decode import decode

    args = model._generate_kwargs(images, PROMPTS, HISTORY, [], 6, 1, False, 1.0, 0.9, 1.0, True, {})
    common = dict(max_new_tokens=6, eos_token_ids=args["eos_token_id"], pad_token_id=args["pad_token_id"])
    grown = decode(model.llm, args["inputs_embeds"], args["attention_mask"], preallocate=False, **common)
    kept = decode(model.llm, args["inputs_embeds"], args["attention_mask"], preallocate=True, **common)
    assert grown.shape == (len(PROMPTS), 6) and torch.equal(grown, kept)


def test_eos_hold_off_gives_transformers_min_new_tokens_scores():
    from transformers import MinNewTokensLengthLogitsProcessor

    from minigpt.models.generation.decode import HoldOffEos

    eos = torch.tensor([3, 7])
    scores = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    for generated in (0, 3, 4, 6):
        ids = torch.zeros(2, generated, dtype=torch.long)
        ref = MinNewTokensLengthLogitsProcessor(0, 4, eos)(ids, scores.clone())
        got = HoldOffEos(4, eos)(ids, scores.clone())
        assert torch.equal(got, ref)
        assert bool(torch.isinf(got[:, eos]).all()) == (generated < 4)
