"""Released-checkpoint presets feed the LLM exactly the token ids the original code feeds it.

For each released preset (``released_*.yaml``) a toy-width model is saved in its family's released
``.pth`` layout and loaded back through ``model.ckpt``; ``generate()`` then runs on one image and a
question, and the embeddings entering the LLM's first decoder layer are read back into token ids
(each position matched against the rows of the input embedding matrix; a position no row matches
is an image embedding). The expected ids are made here the way the original code makes them:
the original demo's conversation rendered as one string (``Conversation.get_prompt``, SINGLE
style), split at ``<ImageHere>``, each segment tokenised on its own with ``add_special_tokens``
only for the first (``get_context_emb``), the image's embeddings between the segments.

The tokenizers are the shipped one with ``<Img>``, ``</Img>`` and ``<ImageHere>`` taken out of its
vocabulary (as in Phi-2's and Llama's), once as it is (adds nothing to a text, as Phi-2's) and once
adding BOS to every text (as Llama's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from test_released_checkpoints import released_file, train_the_trained_parts

from minigpt.common.config import Config
from minigpt.common.constants import IGNORE_INDEX
from minigpt.common.registry import registry
from minigpt.models.parts.llms.hf_causal_lm import SHIPPED_TOKENIZER

IMAGE = "<ImageHere>"
QUESTION = "What colour is the circle?"
# MiniGPT-4's CONV_VISION_Vicuna0 (its demo.py; TinyGPT-V's demo.py for stages 1-3), written out here
VICUNA0 = {
    "system": "Give the following image: <Img>ImageContent</Img>. "
    "You will be able to see the image once I provide it to you. Please answer my questions.",
    "roles": ("Human: ", "Assistant: "),
    "sep": "###",
}
# MiniGPT-v2's demo_v2.py conversation (CONV_VISION_minigptv2 of its eval scripts; TinyGPT-V's demo_v2.py)
MINIGPTV2 = {"system": "", "roles": ("<s>[INST] ", " [/INST]"), "sep": ""}

# preset -> (family, model_type, tokenizer kind, the original conversation, released file, fused qkv)
PRESETS = {
    "tinygptv/released_stage3": ("tinygptv", "released_stage3", "phi", VICUNA0, "TinyGPT-V_for_Stage3.pth", True),
    "tinygptv/released_stage4": ("tinygptv", "released_stage4", "phi", MINIGPTV2, "TinyGPT-V_for_Stage4.pth", True),
    "minigpt4/released_vicuna7b": (
        "minigpt4", "released_vicuna7b", "llama", VICUNA0, "pretrained_minigpt4_7b.pth", False
    ),
    "minigpt_v2/released_llama2_chat_7b": (
        "minigpt_v2", "released_llama2_chat_7b", "llama", MINIGPTV2, "minigptv2_checkpoint.pth", False
    ),
}


# -- tokenizers without the image markers -------------------------------------------------------------
def write_tokenizer(folder: Path, adds_bos: bool) -> Path:
    """The shipped tokenizer with the three image markers renamed away; ``adds_bos``: BOS on every text."""
    shutil.copytree(SHIPPED_TOKENIZER, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    for k, token in enumerate(t for t in spec["added_tokens"] if t["content"] in ("<Img>", "</Img>", IMAGE)):
        token["content"] = f"<unused_{k}>"
    if adds_bos:
        bos_id = next(t["id"] for t in spec["added_tokens"] if t["content"] == "<s>")
        spec["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [bos_id], "tokens": ["<s>"]}},
        }
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {"phi": write_tokenizer(root / "phi", False), "llama": write_tokenizer(root / "llama", True)}


# -- the original procedure -----------------------------------------------------------------------------
def original_prompt(conv: dict, turns: Sequence[str], answers: Sequence[str] = ()) -> str:
    """``Conversation.get_prompt`` (SINGLE) after ``upload_img`` + ``ask`` per turn and ``answer`` per answer."""
    messages: List[Tuple[str, Optional[str]]] = []
    for t, question in enumerate(turns):
        messages.append((conv["roles"][0], f"<Img>{IMAGE}</Img> {question}" if t == 0 else question))
        messages.append((conv["roles"][1], answers[t] if t < len(answers) else None))
    text = conv["system"] + conv["sep"]
    for role, message in messages:
        text += role + message + conv["sep"] if message else role
    return text


def original_ids(tokenizer, prompt: str, n_image: int) -> List[Optional[int]]:
    """``get_context_emb``: split at <ImageHere>, the first segment with special tokens; None per image slot."""
    out: List[Optional[int]] = []
    for i, segment in enumerate(prompt.split(IMAGE)):
        if i:
            out += [None] * n_image
        out += tokenizer(segment, add_special_tokens=i == 0)["input_ids"]
    return out


# -- what the LLM receives ------------------------------------------------------------------------------
def llm_input_ids(model, run) -> List[Optional[int]]:
    """The ids whose embeddings enter the first decoder layer on the first forward ``run()`` makes."""
    seen: List[torch.Tensor] = []

    def grab(module, args, kwargs):
        if not seen:
            seen.append((args[0] if args else kwargs["hidden_states"]).detach())

    layer = model.llm.causal_lm.model.layers[0]
    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    hidden = seen[0][0]  # [T, D]: one prompt, no padding
    table = model.llm.model.get_input_embeddings().weight.detach().to(hidden.dtype)  # [V, D]
    match = (hidden[:, None, :] == table[None, :, :]).all(-1)  # [T, V]
    assert int(match.sum(-1).max()) <= 1, "embedding rows are not distinct"
    return [int(row.nonzero()[0]) if row.any() else None for row in match]


def compose(family: str, model_type: str, tokenizer: Path, *options: str) -> Config:
    path = tokenizer.parent / f"{family}_{model_type}.yaml"
    path.write_text(f"model: {{arch: {family}, model_type: {model_type}}}\n")
    return Config(path, ["model.scale=toy", f"model.llm.tokenizer={tokenizer}", *options])


def build(cfg: Config, seed: int = 0):
    torch.manual_seed(seed)
    return registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval()


@pytest.fixture(scope="module")
def released(tokenizers, tmp_path_factory) -> Dict[str, object]:
    """Each released preset at toy width, its trained parts changed, saved in the released layout and loaded back."""
    out = {}
    for key, (family, model_type, kind, _, filename, fused) in PRESETS.items():
        folder = tmp_path_factory.mktemp(family)
        source = build(compose(family, model_type, tokenizers[kind]))
        train_the_trained_parts(source)
        state = released_file(folder / filename, source, fused=fused)
        assert state and all(k.startswith(("llama_proj", "llama_model.")) for k in state)
        target = build(compose(family, model_type, tokenizers[kind], f"model.ckpt={folder / filename}"))
        for name, p in source.projector.named_parameters():
            assert torch.equal(p, dict(target.projector.named_parameters())[name]), name
        out[key] = target
    return out


def image_for(model) -> torch.Tensor:
    size = model.cfg.vision_encoder.image_size
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("key", list(PRESETS))
def test_generate_feeds_the_llm_the_original_ids(key, released):
    model = released[key]
    _, _, _, conv, _, _ = PRESETS[key]
    expected = original_ids(model.tokenizer, original_prompt(conv, [QUESTION]), model.num_image_tokens())
    got = llm_input_ids(
        model, lambda: model.generate(image_for(model), [f"<Img>{IMAGE}</Img> {QUESTION}"], max_new_tokens=2)
    )
    assert got == expected
    text = model.tokenizer.decode([i for i in got if i is not None])
    assert "<Img>" in text and "</Img>" in text  # the markers reach the LLM as ordinary text
    assert model.tokenizer.convert_tokens_to_ids("<Img>") == model.tokenizer.unk_token_id  # no rows added


@pytest.mark.parametrize("key", ["minigpt4/released_vicuna7b", "minigpt_v2/released_llama2_chat_7b"])
def test_a_continued_conversation_feeds_the_original_ids(key, released):
    model = released[key]
    conv = PRESETS[key][3]
    turns, past = [QUESTION, "And the square?"], ["It is red."]
    expected = original_ids(model.tokenizer, original_prompt(conv, turns, past), model.num_image_tokens())
    prompt = [f"<Img>{IMAGE}</Img> {turns[0]}", turns[1]]
    got = llm_input_ids(
        model, lambda: model.generate(image_for(model), [prompt], history=[past], max_new_tokens=2)
    )
    assert got == expected


def test_tinygptvs_eval_script_conversation(tokenizers):
    """TinyGPT-V's eval_vqa.py: its CONV_VISION_minigptv2 ('###' separators, no system text)."""
    model = build(compose("tinygptv", "released_stage4", tokenizers["phi"], "model.template=tinygptv_eval_chat"))
    conv = {"system": "", "roles": ("Human: ", "Assistant: "), "sep": "###"}
    expected = original_ids(model.tokenizer, original_prompt(conv, [QUESTION]), model.num_image_tokens())
    got = llm_input_ids(
        model, lambda: model.generate(image_for(model), [f"<Img>{IMAGE}</Img> {QUESTION}"], max_new_tokens=1)
    )
    assert got == expected


def test_the_original_bos_is_the_tokenizers_own(released):
    """Phi-2-like tokenizer: no BOS at generation; Llama-like: exactly one, from the first segment."""
    phi, llama = released["tinygptv/released_stage3"], released["minigpt4/released_vicuna7b"]
    got_phi = llm_input_ids(phi, lambda: phi.generate(image_for(phi), [f"<Img>{IMAGE}</Img> hi"], max_new_tokens=1))
    got_llama = llm_input_ids(
        llama, lambda: llama.generate(image_for(llama), [f"<Img>{IMAGE}</Img> hi"], max_new_tokens=1)
    )
    assert phi.tokenizer.bos_token_id not in got_phi
    assert got_llama[0] == llama.tokenizer.bos_token_id and got_llama.count(llama.tokenizer.bos_token_id) == 1
    assert phi.layout.prompt_text([f"<Img>{IMAGE}</Img> hi"]).endswith("###Assistant: ")  # the trailing space
    assert llama.layout.prompt_text([f"<Img>{IMAGE}</Img> hi"]).startswith("<s>Give the following image")


def test_answers_stop_at_the_end_marker(released):
    assert released["tinygptv/released_stage4"].resolve_stop_strings() == ["###"]
    assert released["minigpt_v2/released_llama2_chat_7b"].resolve_stop_strings() == ["</s>"]
    assert released["minigpt4/released_vicuna7b"].resolve_stop_strings() == ["###"]


# -- training with the original's layout ----------------------------------------------------------------
def tiny_original(tokenizer: Path, **over):
    from minigpt.models import load_model

    overrides = {"image_markers": "text", "bos": "first_segment", "answer_end": "###", "template": "vicuna0_chat",
                 "llm": {"tokenizer": str(tokenizer)}, **over}
    torch.manual_seed(0)
    return load_model("tinygptv", "tiny", is_eval=True, overrides=overrides)


def test_training_ids_and_labels_follow_the_original(tokenizers):
    """BOS, the prompt segments without special tokens, the answer with its end_sym tokenised as one text."""
    model = tiny_original(tokenizers["phi"])
    tok, n = model.tokenizer, model.num_image_tokens()
    instruction = f"<Img>{IMAGE}</Img> {QUESTION}"
    prompt = model.template.system + model.template.wrap(instruction)
    batch = model.build_inputs([instruction], ["a red circle"], n)
    answer = tok("a red circle###", add_special_tokens=False)["input_ids"]
    head = [tok.bos_token_id] + original_ids(lambda s, add_special_tokens: tok(s, add_special_tokens=False),
                                             prompt, n)
    ids = [None if m else int(i) for i, m in zip(batch["input_ids"][0], batch["media_mask"][0])]
    assert ids == head + answer
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * len(head) + answer


def test_stage_one_captions_follow_the_original_image_then_caption(tokenizers):
    """MiniGPT-4 / TinyGPT-V stages 1-2: BOS, the image alone (no <Img> tags, no prompt), the caption with
    its end_sym ('\\n') tokenised as one text and no space before it; labels on the caption only."""
    model = tiny_original(tokenizers["phi"], template="bare", image_tags=False, answer_end="\n")
    tok, n = model.tokenizer, model.num_image_tokens()
    batch = model.build_inputs([f"<Img>{IMAGE}</Img>"], ["a red circle at the top left"], n)
    caption = tok("a red circle at the top left\n", add_special_tokens=False)["input_ids"]
    ids = [None if m else int(i) for i, m in zip(batch["input_ids"][0], batch["media_mask"][0])]
    assert ids == [tok.bos_token_id] + [None] * n + caption
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * (1 + n) + caption
    tagged = tiny_original(tokenizers["phi"], template="bare", answer_end="\n")  # image_tags: true (default)
    with_tags = tagged.build_inputs([f"<Img>{IMAGE}</Img>"], ["a red circle at the top left"], n)
    assert int(with_tags["attention_mask"].sum()) > int(batch["attention_mask"].sum())  # <Img>, </Img> pieces


@pytest.mark.parametrize("counts", ["sequence", "answer"])
def test_max_txt_len_counts_the_whole_text_or_the_answer_only(tokenizers, counts):
    tok_dir = tokenizers["phi"]
    long_answer = "a red circle on the left of a blue square under a green triangle"
    probe = tiny_original(tok_dir)
    n_answer = len(probe.tokenizer(long_answer + "###", add_special_tokens=False)["input_ids"])
    instruction = f"<Img>{IMAGE}</Img> {QUESTION}"
    full = probe.build_inputs([instruction], [long_answer], probe.num_image_tokens())
    n_prompt_text = int((full["labels"][0] == IGNORE_INDEX).sum()) - probe.num_image_tokens() + 1  # slot: one id

    assert n_answer > 5 and n_prompt_text > 5
    model = tiny_original(tok_dir, max_txt_len=5, max_txt_len_counts=counts)
    if counts == "answer":  # the answer alone is cut to 5 tokens, the prompt kept whole (the originals)
        batch = model.build_inputs([instruction], [long_answer], model.num_image_tokens())
        assert int((batch["labels"][0] != IGNORE_INDEX).sum()) == 5
        assert int(batch["attention_mask"].sum()) == int(full["attention_mask"].sum()) - (n_answer - 5)
        assert int(batch["media_mask"].sum()) == model.num_image_tokens()
    else:  # 5 tokens of text in all: the cut falls in the prompt, before the image slot here
        with pytest.raises(ValueError, match="max_txt_len=5 cuts off a <ImageHere> slot"):
            model.build_inputs([instruction], [long_answer], model.num_image_tokens())
        text_only = model.build_inputs([QUESTION], [long_answer], 0)
        assert text_only["attention_mask"].sum() == 5 and (text_only["labels"][0] != IGNORE_INDEX).sum() == 0


def test_image_markers_as_text_add_no_rows_special_tokens_do(tokenizers):
    from transformers import AutoTokenizer

    base = len(AutoTokenizer.from_pretrained(str(tokenizers["phi"])))
    as_text = tiny_original(tokenizers["phi"])
    special = tiny_original(tokenizers["phi"], image_markers="special_tokens")
    assert len(as_text.tokenizer) == base == as_text.llm.model.get_input_embeddings().num_embeddings
    assert len(special.tokenizer) == base + 3  # <Img>, </Img>, <ImageHere>: new rows no training touched
    assert special.layout.tokenize(["<Img>"]) == [[base]]
    assert len(as_text.layout.tokenize(["<Img>"])[0]) > 1  # ordinary BPE pieces


@pytest.mark.parametrize(
    "key, value",
    [("image_markers", "tokens"), ("bos", "first"), ("max_txt_len_counts", "prompt"), ("answer_end", ""),
     ("image_tags", "no")],
)
def test_a_bad_switch_value_is_a_clear_error(tokenizers, key, value):
    with pytest.raises(ValueError, match=f"model.{key} must be"):
        tiny_original(tokenizers["phi"], **{key: value})
