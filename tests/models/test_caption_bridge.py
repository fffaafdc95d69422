"""EasyGen end to end: a tiny model trained on synthetic drawing dialogues writes ``<Img>caption</Img>``
for a drawing request, and the caption bridge draws an image that holds the caption's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt.common.registry import registry
from minigpt.common.t2i import TextToImage
from minigpt.datasets.synthetic import COLOURS, generate_synthetic_dataset
from minigpt.datasets.synthetic.caption_drawing import parse_caption
from minigpt.models import load_model
from minigpt.models.caption_bridge import CaptionBridge

N_DIALOGUES = 4


@pytest.fixture(scope="module")
def dialogues(tmp_path_factory):
    root = tmp_path_factory.mktemp("easygen_e2e")
    generate_synthetic_dataset(root / "synthetic", n_train=N_DIALOGUES, n_test=1, seed=0, progress=False, easygen=True)
    ds = registry.get_builder_class("synthetic_photochat")({}, data_root=str(root)).build_datasets(["train"])["train"]
    return [ds[i] for i in range(N_DIALOGUES)]


@pytest.fixture(scope="module")
def trained(dialogues):
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", is_eval=False)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.0)
    batch = {"image": None, "instruction_input": [d["instruction_input"] for d in dialogues],
             "answer": [d["answer"] for d in dialogues]}
    losses = []
    for _ in range(60):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        if losses[-1] < 0.02:
            break
    model.eval()
    return model, losses


def _reply(model, dialogue):
    """The answer to the dialogue's last request, the earlier answers given as history."""
    return model.generate(None, [dialogue["instruction_input"]], history=[dialogue["answer"][:-1]],
                          max_new_tokens=48)[0]


def test_the_trained_model_answers_a_drawing_request_with_the_caption_and_the_bridge_draws_it(trained, dialogues):
    model, losses = trained
    assert losses[-1] < 0.1 < losses[0], losses
    bridge = CaptionBridge(model, {"name": "synthetic_shapes", "strict": True})
    for d in dialogues:
        (reply,) = bridge.respond(None, [d["instruction_input"]], history=[d["answer"][:-1]], max_new_tokens=48)
        assert reply.descriptions == [d["photo_description"]], reply.text
        (image,) = reply.images
        pixels = np.asarray(image)
        # the drawing holds each requested shape, in its colour, in the cell the request named
        for obj in parse_caption(d["photo_description"]).objects:
            assert f"{obj['colour']} {obj['kind']}" in d["instruction_input"][-1]
            x1, y1, x2, y2 = obj["box"]
            assert tuple(pixels[(y1 + y2) // 2 + 2, (x1 + x2) // 2]) == COLOURS[obj["colour"]]


def test_an_untrained_model_writes_no_image(dialogues):
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", is_eval=True)
    bridge = CaptionBridge(model, {"name": "synthetic_shapes"})
    replies = bridge.respond(None, [d["instruction_input"] for d in dialogues],
                             history=[d["answer"][:-1] for d in dialogues], max_new_tokens=16)
    assert all(r.images == [] for r in replies)


def test_draw_hands_every_description_of_every_text_to_the_generator_in_one_call():
    calls = []

    class Counting(TextToImage):
        def draw(self, descriptions, seeds):
            calls.append((list(descriptions), seeds))
            return [Image.new("RGB", (2, 2)) for _ in descriptions]

    bridge = CaptionBridge(model=None, t2i=Counting())
    replies = bridge.draw(["<Img>a</Img> and <Img>b</Img>", "no picture", "<Img>c</Img>"], seed=5)
    assert calls == [(["a", "b", "c"], [5, 6, 7])]
    assert [len(r.images) for r in replies] == [2, 0, 1] and replies[0].descriptions == ["a", "b"]
    assert bridge.draw(["nothing here"])[0].images == [] and len(calls) == 1
