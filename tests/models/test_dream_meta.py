"""DreamLLM's real-size preset built on the meta device: no weight file read, the published sizes.

Reference figures:

* Stable Diffusion 2.1-base UNet: 865,910,724 parameters (the "865M UNet" of the Stable Diffusion 2
  model card; the shapes of stabilityai/stable-diffusion-2-1-base's unet/config.json).
* Its VAE, the KL-f8 autoencoder of latent diffusion (Rombach et al., 2022): 83,653,863 parameters.
* Vicuna-7B: 6,738,415,616, the LLaMA-7B shapes (as tests/models/test_presets_meta.py).
* OpenAI CLIP ViT-L/14 vision tower (224 px): 303,179,776 (as docs/lavin.md counts it).
* DreamLLM's own: 64 dream queries of 4096, a Linear(4096 -> 1024) condition projector, a Linear(1024 -> 4096)
  visual projector.
"""

import pytest

from minigpt.models import load_model

SD21_UNET = 865_910_724
SD_VAE = 83_653_863
LLAMA_7B = 6_738_415_616
CLIP_VIT_L14 = 303_179_776


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def empty_model_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))


def test_dreamllm_preset_has_the_published_sizes():
    m = load_model("dreamllm", "vicuna7b_sd21", device="meta")
    assert all(p.is_meta for p in m.parameters())
    head = m.dream_head
    assert count(head.unet) == SD21_UNET
    assert count(head.vae) == SD_VAE
    assert count(m.llm) == LLAMA_7B
    assert count(m.vision_encoder) == CLIP_VIT_L14
    assert head.queries.shape == (64, 4096)
    assert count(head.condition_projector) == 4096 * 1024 + 1024
    assert count(m.projector) == 1024 * 4096 + 4096
    total = SD21_UNET + SD_VAE + LLAMA_7B + CLIP_VIT_L14 + 64 * 4096 + (4096 * 1024 + 1024) + (1024 * 4096 + 4096)
    assert count(m) == total
    assert head.freeze_unet and head.freeze_vae
    assert head.unet.config.cross_attention_dim == 1024 and head.noise_scheduler.config.prediction_type == "epsilon"
