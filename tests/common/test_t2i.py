"""The ``t2i`` kind: image spans in text, building a generator by name, the synthetic caption painter."""

from __future__ import annotations

import numpy as np
import pytest

from minigpt.common.registry import RegistryError, registry
from minigpt.common.t2i import TextToImage, build_t2i, image_span, image_spans
from minigpt.datasets.synthetic import COLOURS, make_example, position_word
from minigpt.datasets.synthetic.caption_drawing import CaptionParseError, parse_caption


def test_spans_hold_descriptions_and_leave_out_input_images_and_unclosed_tags():
    text = "look <Img><ImageHere></Img> then <Img> one shape: a red circle at the top. </Img> and <Img>cut"
    spans = image_spans(text)
    assert [s.description for s in spans] == ["one shape: a red circle at the top."]
    assert text[spans[0].start : spans[0].end].startswith("<Img> one shape")
    assert image_spans("<Img>   </Img>") == []
    assert image_span(" a dog ") == "<Img>a dog</Img>"
    with pytest.raises(ValueError, match="image tags"):
        image_span("a <Img>dog")


def test_the_kind_lists_its_built_ins_and_an_unknown_name_lists_close_ones():
    assert {"diffusers", "synthetic_shapes"} <= set(registry.list_t2i())
    with pytest.raises(RegistryError, match="synthetic_shapes"):
        build_t2i({"name": "synthetic_shape"})
    with pytest.raises(KeyError, match="needs a 'name'"):
        build_t2i({})


def test_a_plugin_generator_registers_and_builds_with_its_keys():
    @registry.register_t2i("grey_test")
    class Grey(TextToImage):
        def __init__(self, level: int = 128):
            self.level = level

        def draw(self, descriptions, seeds):
            from PIL import Image

            return [Image.new("RGB", (4, 4), (self.level,) * 3) for _ in descriptions]

    try:
        out = build_t2i({"name": "grey_test", "level": 7})(["a", "b"])
        assert [im.getpixel((0, 0)) for im in out] == [(7, 7, 7)] * 2
        with pytest.raises(TypeError, match="bad keys"):
            build_t2i({"name": "grey_test", "colour": 1})
        with pytest.raises(TypeError, match="list of descriptions"):
            build_t2i({"name": "grey_test"})("one string")
    finally:
        registry.unregister("t2i", "grey_test")


@pytest.mark.parametrize("index", range(40))
def test_every_generated_caption_is_painted_with_its_shapes_in_their_cells(index):
    ex = make_example(0, "train", index, render=False)
    (image,) = build_t2i({"name": "synthetic_shapes", "strict": True})([ex.caption])
    pixels = np.asarray(image)
    for obj in parse_caption(ex.caption).objects:
        x1, y1, x2, y2 = obj["box"]
        centre = pixels[(y1 + y2) // 2 + 2, (x1 + x2) // 2]  # a little below the middle: inside a triangle too
        assert tuple(centre) == COLOURS[obj["colour"]], (ex.caption, obj)
    # the caption read back names the same shapes at the same grid words
    words = sorted((o["colour"], o["kind"]) for o in ex.scene.objects)
    assert sorted((o["colour"], o["kind"]) for o in parse_caption(ex.caption).objects) == words


def test_a_drawing_depends_on_its_own_seed_not_on_the_call_it_is_in():
    t2i = build_t2i({"name": "synthetic_shapes"})
    a, b = "one shape: a red circle at the top.", "one shape: a blue square at the left."
    pair = t2i([a, b], seed=[3, 4])
    assert np.array_equal(np.asarray(pair[1]), np.asarray(t2i([b], seed=[4])[0]))
    assert np.array_equal(np.asarray(pair[1]), np.asarray(t2i([a, b], seed=3)[1]))  # base seed: 3 + position
    assert not np.array_equal(np.asarray(pair[1]), np.asarray(t2i([b], seed=[5])[0]))  # another background
    with pytest.raises(ValueError, match="2 seeds for 1 descriptions"):
        t2i([a], seed=[1, 2])


def test_a_caption_that_does_not_parse_is_an_error_when_strict_and_a_background_otherwise():
    with pytest.raises(CaptionParseError, match="says two"):
        parse_caption("two shapes: a red circle at the top.")
    shared = parse_caption("two shapes: a red circle at the top and a blue square at the top.").objects
    a, b = (o["box"] for o in shared)
    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]  # side by side, not on top of each other
    assert all(position_word(o["box"], 64, 64) == "top" for o in shared)
    with pytest.raises(CaptionParseError, match="no '<a|an>"):
        build_t2i({"name": "synthetic_shapes", "strict": True})(["a cat on a mat"])
    (bg,) = build_t2i({"name": "synthetic_shapes"})(["a cat on a mat"])
    colours = np.array(list(COLOURS.values()))
    dist = np.abs(np.asarray(bg).reshape(-1, 1, 3).astype(int) - colours[None]).sum(-1)
    assert dist.min() > 60  # no shape colour anywhere
