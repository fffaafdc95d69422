"""The word code: fixed vectors for the synthetic world's kind and colour words, shared by the LLM's
embeddings of those words (``llm.word_code_init``) and stage 0's word-code head (``word_code_loss_weight``)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from shared_helpers import stage0_model

from minigpt.common.registry import registry
from minigpt.models.grid_code import synthetic_words, word_codes


def test_word_codes_are_the_generators_words_orthogonal_and_seeded():
    codes = word_codes(16, seed=0)
    words = synthetic_words()
    assert list(codes) == [*words["kind"], *words["colour"]]
    m = torch.stack(list(codes.values()))
    gram = m @ m.T
    assert torch.allclose(gram, 8.0 * torch.eye(len(codes)), atol=1e-4)  # orthogonal, sqrt(16 / 2) long
    assert torch.equal(word_codes(16, seed=0)["circle"], codes["circle"])
    assert not torch.allclose(word_codes(16, seed=1)["circle"], codes["circle"])
    with pytest.raises(ValueError, match="dim 4 is less than the 9 words"):
        word_codes(4)


def test_llm_word_embeddings_start_as_the_codes():
    family = registry.get_model_class("tinygptv")
    cfg = OmegaConf.load(family.default_config_path("tiny")).model
    cfg.llm.word_code_init = True
    torch.manual_seed(0)
    llm = family.from_config(cfg).llm
    tok, lm = llm.tokenizer, llm.causal_lm
    emb, out = lm.get_input_embeddings().weight.detach(), lm.get_output_embeddings().weight.detach()
    codes = word_codes(16, seed=0)
    for word, code in codes.items():
        for text in (" " + word, word):  # in a sentence and bare: one token each with the shipped tokenizer
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1, (text, ids)
            row = emb[ids[0]]
            assert torch.count_nonzero(row[16:]) == 0
            assert torch.allclose(row[:16] / row[:16].norm(), code / code.norm(), atol=1e-5)
            assert torch.equal(out[ids[0]], row)
    # the question's "circle" is closest to the circle's code, among every word's
    q = emb[tok(" circle", add_special_tokens=False)["input_ids"][0], :16]
    assert max(codes, key=lambda w: float(codes[w] @ q)) == "circle"
    cfg.llm.word_code_init = False
    torch.manual_seed(0)
    plain = family.from_config(cfg).llm.causal_lm.get_input_embeddings().weight.detach()
    assert torch.count_nonzero(plain[tok(" circle", add_special_tokens=False)["input_ids"][0], 16:]) > 0


def test_stage0_word_code_head_targets_kind_plus_colour_code_and_learns():
    model = stage0_model(**{"word_code_loss_weight": 1.0})
    codes = word_codes(16, seed=0)
    box = [0.25, 0.25, 0.75, 0.75]
    samples = {"image": torch.zeros(1, 3, 64, 64), "regions": [[{"box": box, "kind": "square", "colour": "blue"}]]}
    head = model.heads["word_code"]
    with torch.no_grad():  # a head writing exactly square + blue on every token scores 0
        head.weight.zero_()
        head.bias.copy_(codes["square"] + codes["blue"])
    assert model(samples)["word_code_mse"].item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        head.bias.copy_(codes["circle"] + codes["blue"])  # the wrong kind
    assert model(samples)["word_code_mse"].item() > 0.5
    # a toy batch: the loss falls
    torch.manual_seed(0)
    model = stage0_model(**{"word_code_loss_weight": 1.0})
    imgs = torch.rand(4, 3, 64, 64)
    regions = [[{"box": [0.0, 0.0, 0.5, 0.5], "kind": k, "colour": c}] for k, c in
               [("circle", "red"), ("square", "green"), ("triangle", "blue"), ("circle", "orange")]]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        out = model({"image": imgs, "regions": regions})
        first = first if first is not None else out["word_code_mse"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["word_code_mse"].item() < 0.5 * first


def test_word_code_settings_are_checked():
    assert "word_code" not in stage0_model().heads  # default 0: no head
    with pytest.raises(ValueError, match="class 'pink' is not a word of the synthetic world"):
        stage0_model(**{"word_code_loss_weight": 1.0, "label_fields": {"kind": ["circle"], "colour": ["pink"]}})
    with pytest.raises(ValueError, match="'word_code' names a head"):
        stage0_model(**{"label_fields": {"word_code": ["a"]}})
