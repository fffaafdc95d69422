import pytest
import torch
from PIL import Image

from minigpt.common.registry import registry
from minigpt.processors.image import CLIP_MEAN, CLIP_STD, ImageEvalProcessor, ImageTrainProcessor


def _normalised(rgb, mean=CLIP_MEAN, std=CLIP_STD):
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, mean, std)])


def test_registry_names_resolve_to_the_classes():
    assert registry.get_processor_class("image_train") is ImageTrainProcessor
    assert registry.get_processor_class("image_eval") is ImageEvalProcessor


def test_eval_resizes_non_square_image_to_square_and_normalises():
    proc = ImageEvalProcessor.from_config({"name": "image_eval", "image_size": 24})
    out = proc(Image.new("RGB", (50, 20), (200, 30, 90)))
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    # a flat colour stays flat through a resize, so every pixel equals the normalised colour
    expected = _normalised((200, 30, 90)).view(3, 1, 1).expand(3, 24, 24)
    assert torch.allclose(out, expected, atol=1e-4)


def test_eval_keeps_left_right_layout():
    image = Image.new("RGB", (40, 40), (0, 0, 0))
    image.paste((255, 255, 255), (20, 0, 40, 40))  # right half white
    out = ImageEvalProcessor(image_size=16)(image)
    assert out[0, :, :6].mean() < 0 < out[0, :, 10:].mean()


def test_train_random_crop_has_requested_size_and_custom_stats():
    proc = ImageTrainProcessor.from_config(
        {"image_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "min_scale": 0.2}
    )
    assert (proc.min_scale, proc.max_scale) == (0.2, 1.0)
    out = proc(Image.new("RGB", (64, 48), (255, 0, 127)))
    assert out.shape == (3, 16, 16)
    expected = _normalised((255, 0, 127), (0.5,) * 3, (0.5,) * 3).view(3, 1, 1)
    assert torch.allclose(out, expected.expand(3, 16, 16), atol=1e-3)


def test_train_converts_grayscale_to_rgb():
    out = ImageTrainProcessor(image_size=8)(Image.new("L", (20, 20), 128))
    assert out.shape == (3, 8, 8)


def test_defaults_and_from_config_none():
    proc = ImageTrainProcessor.from_config(None)
    assert proc.image_size == 224 and (proc.min_scale, proc.max_scale) == (0.5, 1.0)
    assert proc.mean == CLIP_MEAN and proc.std == CLIP_STD


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"image_size": 32, "min_scal": 0.3}, "min_scal"),
        ({"image_size": 0}, "image_size"),
        ({"min_scale": 0.9, "max_scale": 0.5}, "min_scale"),
        ({"mean": [0.5, 0.5]}, "mean"),
    ],
)
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        ImageTrainProcessor.from_config(cfg)


def test_rejects_non_image_input():
    with pytest.raises(TypeError, match="PIL image"):
        ImageEvalProcessor(image_size=8)(torch.zeros(3, 8, 8))


def test_center_crop_keeps_the_aspect_ratio_and_the_middle():
    # 40 x 120: left third red, middle third green, right third blue
    img = Image.new("RGB", (120, 40))
    for x0, colour in ((0, (255, 0, 0)), (40, (0, 255, 0)), (80, (0, 0, 255))):
        img.paste(colour, (x0, 0, x0 + 40, 40))
    p = registry.get_processor_class("image_center_crop").from_config({"name": "image_center_crop", "image_size": 20})
    out = p(img)
    assert out.shape == (3, 20, 20)
    rgb = out * torch.tensor(CLIP_STD)[:, None, None] + torch.tensor(CLIP_MEAN)[:, None, None]
    assert torch.allclose(rgb.mean((1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=0.02)  # only the green middle
