"""MiniGPT-v2's box text and task tags: format, tolerant parsing, pixels, IoU, drawing."""

from __future__ import annotations

import pytest
from PIL import Image

from minigpt.common import grounding as G
from minigpt.evaluation import metrics as M


def test_task_tags():
    assert G.task_prompt("refer", "the red circle") == "[refer] the red circle"
    assert G.task_prompt("[vqa]", "what?") == "[vqa] what?"
    assert G.split_task_tag("[grounding] describe it") == ("[grounding]", "describe it")
    assert G.split_task_tag("no tag [vqa] here") == (None, "no tag [vqa] here")
    with pytest.raises(KeyError, match="unknown task 'segment'"):
        G.task_prompt("segment", "x")


def test_format_box_on_the_grid():
    # 640x480 image: x divides by 640, y by 480
    assert G.format_box([64, 48, 320, 480], 640, 480) == "{<10><10><50><100>}"
    assert G.box_to_grid([0.6, 0, 10.4, 10], 10, 10) == [6, 0, 100, 100]  # 6.0, 0, 104 -> clipped, 100
    assert G.box_to_grid([1.99, 0, 5, 5], 100, 100, rounding="floor") == [1, 0, 5, 5]  # MiniGPT-v2's int()
    assert G.box_to_grid([1.99, 0, 5, 5], 100, 100) == [2, 0, 5, 5]
    assert (
        G.format_phrase_boxes("a dog", [[1, 2, 3, 4], [5, 6, 7, 8]])
        == "<p>a dog</p> {<1><2><3><4>}<delim>{<5><6><7><8>}"
    )
    for bad in ([1, 2, 3], [0, 0, 101, 5], [0.5, 0, 1, 1]):
        with pytest.raises(ValueError):
            G.format_grid_box(bad)
    with pytest.raises(ValueError, match="image size must be positive"):
        G.format_box([0, 0, 1, 1], 0, 10)


@pytest.mark.parametrize("seed", range(5))
def test_format_then_parse_round_trips_within_half_a_grid_step(seed):
    import random

    rng = random.Random(seed)
    w, h = rng.randint(50, 1000), rng.randint(50, 1000)
    xs, ys = sorted(rng.uniform(0, w) for _ in range(2)), sorted(rng.uniform(0, h) for _ in range(2))
    box = [xs[0], ys[0], xs[1], ys[1]]
    text = G.format_box(box, w, h)
    [(label, grid)] = G.parse_boxes(text)
    assert label is None and grid == G.box_to_grid(box, w, h)
    back = G.grid_to_pixels(grid, w, h)
    for got, want, size in zip(back, box, (w, h, w, h)):
        assert abs(got - want) <= 0.5 / 100 * size + 1e-9


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{<10><20><30><40>}", [(None, [10, 20, 30, 40])]),
        ("at { <10> < 20 ><30>  <40> } here", [(None, [10, 20, 30, 40])]),  # spaces
        ("<10><20><30><40>", [(None, [10, 20, 30, 40])]),  # no braces
        ("[refer] {<10><20><30><40>", [(None, [10, 20, 30, 40])]),  # closing brace cut off
        ("{<30><40><10><20>}", [(None, [10, 20, 30, 40])]),  # corners swapped
        ("{<120><-5><50><999>}", [(None, [50, 0, 100, 100])]),  # off the grid: clipped
        (
            "<p>a dog</p> {<1><2><3><4>}<delim>{<5><6><7><8>} chases <p>a cat</p>{<9><9><20><20>}",
            [("a dog", [1, 2, 3, 4]), ("a dog", [5, 6, 7, 8]), ("a cat", [9, 9, 20, 20])],
        ),
        ("<p>a dog {<1><2><3><4>}", [("a dog", [1, 2, 3, 4])]),  # </p> lost
        ("<p>a dog</p> is somewhere {<1><2><3><4>}", [(None, [1, 2, 3, 4])]),  # text between: no label
        ("{<1><2><3><4>} and <p>x</p> {<5><6><7><8>}", [(None, [1, 2, 3, 4]), ("x", [5, 6, 7, 8])]),
        ("", []),
        ("{<10><20><30>}", []),  # three numbers are not a box
        ("{<a><b><c><d>}", []),
        ("<1000><2><3><4>", []),
    ],
)
def test_parse_boxes_tolerates_malformed_output(text, expected):
    assert G.parse_boxes(text) == expected
    assert G.parse_box(text) == (expected[0][1] if expected else None)
    assert M.parse_box(text) == G.parse_box(text)  # the metric reads boxes the same way


def test_iou_hand_worked():
    assert G.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert G.iou([0, 0, 2, 1], [0, 0, 1, 1]) == 0.5  # 1 / (2 + 1 - 1)
    assert G.iou([0, 0, 4, 4], [2, 2, 6, 6]) == pytest.approx(4 / 28)  # 2x2 overlap, 16 + 16 - 4
    assert G.iou([0, 0, 1, 1], [1, 0, 2, 1]) == 0.0  # touching edges
    assert G.iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # degenerate: no division by zero
    # the Acc@0.5 boundary, in pixels from grid boxes: [0, 0, 50, 100] vs [0, 0, 100, 100] on 200x80
    a = G.grid_to_pixels([0, 0, 50, 100], 200, 80)
    b = G.grid_to_pixels([0, 0, 100, 100], 200, 80)
    assert a == [0.0, 0.0, 100.0, 80.0] and G.iou(a, b) == 0.5
    assert G.iou(G.grid_to_pixels([0, 0, 49, 100], 200, 80), b) < 0.5
    assert M.iou(a, b) == G.iou(a, b) and M.grid_to_pixels([0, 0, 50, 100], 200, 80) == a


def test_draw_boxes_outlines_the_box_and_keeps_the_size():
    img = Image.new("RGB", (120, 90), (255, 255, 255))
    out = G.draw_boxes(img, [(None, [20, 30, 80, 60])], line_width=2)
    assert out.size == img.size and out is not img
    assert img.getpixel((20, 45)) == (255, 255, 255)  # the input is left alone
    for x, y in [(20, 45), (80, 45), (50, 30), (50, 60), (21, 31)]:  # on the outline
        assert out.getpixel((x, y)) != (255, 255, 255), (x, y)
    for x, y in [(50, 45), (10, 10), (100, 80), (23, 33)]:  # inside and outside it
        assert out.getpixel((x, y)) == (255, 255, 255), (x, y)


def test_draw_boxes_labels_grid_boxes_in_their_colours():
    img = Image.new("L", (200, 100), 255)
    boxes = G.parse_boxes(
        "<p>dog</p> {<10><40><40><90>}<delim>{<60><40><90><90>} <p>cat</p> {<45><50><55><60>}"
    )
    out = G.draw_boxes(img, boxes, grid=True, line_width=1)
    assert out.mode == "RGB" and out.size == (200, 100)
    # grid x 10 -> pixel 20 on a 200-wide image; both dog boxes share a colour, the cat's differs
    dog1, dog2, cat = out.getpixel((20, 70)), out.getpixel((120, 70)), out.getpixel((90, 55))
    assert dog1 == dog2 != cat and dog1 != (255, 255, 255)
    # the label strip above the first dog box is filled with its colour (text aside)
    strip = [out.getpixel((x, 37)) for x in range(21, 40)]
    assert strip.count(dog1) > len(strip) // 2
    # bare boxes are accepted too, each in its own colour
    bare = G.draw_boxes(img, [[0, 0, 50, 50], [100, 0, 150, 50]], line_width=1)
    assert bare.getpixel((0, 25)) != bare.getpixel((100, 25))
