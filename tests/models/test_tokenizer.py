"""The small BPE tokenizer shipped in minigpt/models/parts/tokenizer and the script that trains it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from minigpt.datasets.synthetic import COLOURS, KINDS

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "minigpt" / "models" / "parts" / "tokenizer"
IMAGE_TOKENS = ["<Img>", "</Img>", "<ImageHere>", "<image>"]
TASK_TAGS = ["[caption]", "[vqa]", "[refer]", "[grounding]", "[identify]", "[detection]"]


@pytest.fixture(scope="module")
def tok():
    return PreTrainedTokenizerFast.from_pretrained(str(TOKENIZER_DIR))


def _train_script():
    spec = importlib.util.spec_from_file_location("train_tokenizer", REPO / "scripts" / "train_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_files_exist_and_load_with_auto_tokenizer(tok):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (TOKENIZER_DIR / name).is_file(), name
    auto = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert len(auto) == len(tok) == 1024
    assert auto.get_vocab() == tok.get_vocab()
    text = "<Img><ImageHere></Img> [refer] the red circle"
    assert auto(text)["input_ids"] == tok(text)["input_ids"]


def test_special_tokens_are_set_and_distinct(tok):
    assert (tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token) == ("<pad>", "<unk>", "<s>", "</s>")
    ids = [tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id]
    assert None not in ids and len(set(ids)) == 4
    assert tok.padding_side == "right"
    batch = tok(["a red circle", "yes"], padding=True)
    assert batch["input_ids"][1][-1] == tok.pad_token_id and batch["attention_mask"][1][-1] == 0
    assert batch["attention_mask"][0] == [1] * len(batch["input_ids"][0])


def test_grid_tokens_are_single_ids(tok):
    ids = tok.encode("{<12><34><56><78>}", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["{", "<12>", "<34>", "<56>", "<78>", "}"]
    for i in range(101):
        (one,) = tok.encode(f"<{i}>", add_special_tokens=False)
        assert tok.convert_ids_to_tokens(one) == f"<{i}>"
    # Longest match: "<100>" is not "<10>" followed by "0>".
    assert len(tok.encode("<100><10><1><0>", add_special_tokens=False)) == 4


def test_markers_and_tags_are_single_tokens(tok):
    for t in IMAGE_TOKENS + TASK_TAGS:
        ids = tok.encode(t, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t, t
        assert tok.encode(f"x{t}y", add_special_tokens=False)[1] == ids[0], t


def test_prompt_round_trips_exactly(tok):
    text = "<Img><ImageHere></Img> [vqa] what color is the circle?"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    # Grid tokens are ordinary added tokens: skipping special tokens must keep a generated box.
    box = " {<5><10><95><100>}</s>"
    assert (
        tok.decode(tok.encode(box, add_special_tokens=False), skip_special_tokens=True) == box[: -len("</s>")]
    )


@pytest.mark.parametrize("word", list(COLOURS) + list(KINDS))
def test_generator_words_are_short(tok, word):
    for form in (word, " " + word):
        assert len(tok.encode(form, add_special_tokens=False)) <= 2, form


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld — naïve café",
        "日本語のテキスト 🙂🚀 emoji",
        "tabs\tand\nnewlines  double  spaces ",
        "###Human: <Img><ImageHere></Img> Describe this image. ###Assistant: ",
        "[INST] what is in the region {<0><0><50><50>}? [/INST]",
        "\x00\x7f control bytes \u200b zero-width",
    ],
)
def test_arbitrary_text_round_trips(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)


def test_domain_text_is_compact(tok):
    text = "two shapes: a red circle at the top left and a blue square at the bottom right."
    # At most one token per word plus the two punctuation marks.
    assert len(tok.encode(text, add_special_tokens=False)) <= len(text.split()) + 2


def test_training_is_deterministic(tmp_path):
    script = _train_script()
    assert script.main(["--out", str(tmp_path / "a")]) == 0
    assert script.main(["--out", str(tmp_path / "b")]) == 0
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    config = json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    assert config["padding_side"] == "right" and config["eos_token"] == "</s>"
    trained = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "a"))
    assert len(trained) == 1024 and trained.convert_tokens_to_ids("<ImageHere>") != trained.unk_token_id
