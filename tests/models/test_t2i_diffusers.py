"""The ``diffusers`` t2i generator on a tiny random Stable Diffusion pipeline saved to a local folder."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from minigpt.common.t2i import build_t2i  # noqa: E402


def _byte_level_clip_tokenizer():
    """A CLIP tokenizer whose vocabulary is printable ASCII alone (no merges): enough to run a pipeline."""
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("tiny_sd")
    tokenizer = _byte_level_clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def test_a_local_pipeline_draws_one_image_per_description_repeatably(pipeline_dir):
    t2i = build_t2i({"name": "diffusers", "pretrained": str(pipeline_dir), "num_inference_steps": 2,
                     "height": 16, "width": 16})
    a = t2i(["a red circle", "a blue square"], seed=3)
    assert len(a) == 2 and all(isinstance(im, Image.Image) and im.size == (16, 16) for im in a)
    b = t2i(["a red circle", "a blue square"], seed=3)
    assert list(a[0].getdata()) == list(b[0].getdata())


def test_a_folder_that_holds_no_pipeline_is_named_in_the_error(tmp_path):
    with pytest.raises(OSError, match=str(tmp_path)):
        build_t2i({"name": "diffusers", "pretrained": str(tmp_path)})


def test_an_unknown_dtype_is_refused_before_loading(pipeline_dir):
    with pytest.raises(ValueError, match="torch_dtype"):
        build_t2i({"name": "diffusers", "pretrained": str(pipeline_dir), "torch_dtype": "float8"})
