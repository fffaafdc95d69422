"""DreamLLM on its tiny preset: layout of the dream tokens, what trains, the zero-weighted pass, per-head
checkpoints, loss parts, drawing and the image fed back during generation."""

from __future__ import annotations

import pytest
import torch

from minigpt.common.constants import DREAM_TOKEN, IGNORE_INDEX
from minigpt.models import load_model

TINY_VAE = {
    "config": {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [8, 8],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "layers_per_block": 1, "norm_num_groups": 4,
        "sample_size": 16,
    },
    "freeze": True,
}


def tiny(**head):
    overrides = {"heads": {"dream_diffusion": head}} if head else None
    torch.manual_seed(0)
    return load_model("dreamllm", "tiny", overrides=overrides)


def drawing_batch(n_dream: int = 2, n_text: int = 1):
    prompts = [f"draw a red circle in the top left {i}" for i in range(n_dream)] + ["say hi"] * n_text
    return {
        "image": None,
        "instruction_input": prompts,
        "answer": [DREAM_TOKEN] * n_dream + ["hi there"] * n_text,
        "target_image": [torch.rand(3, 64, 64) * 2 - 1 for _ in range(n_dream)] + [None] * n_text,
        "sample_id": [f"s{i}" for i in range(n_dream + n_text)],
    }


@pytest.fixture(scope="module")
def frozen_unet_model():
    unet = {"freeze": True, "config": {"in_channels": 4, "out_channels": 4, "sample_size": 8}}
    return tiny(unet=unet, vae=TINY_VAE, resolution=32)


def test_only_dream_token_is_supervised_and_query_slots_are_marked():
    model = tiny()
    q = model.dream_head.num_queries
    batch = model.build_inputs(["draw it"], [DREAM_TOKEN], model.num_image_tokens())
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert int(batch["dream_mask"].sum()) == q
    supervised = ids[labels != IGNORE_INDEX].tolist()
    assert model.dream_token_id in supervised
    for tok in (model.dream_start_id, model.dream_query_id, model.dream_end_id):
        assert tok not in supervised and tok in ids.tolist()
    start = ids.tolist().index(model.dream_start_id)
    assert ids[start + 1:start + 1 + q].tolist() == [model.dream_query_id] * q
    assert ids[start + 1 + q].item() == model.dream_end_id


def test_gradients_reach_queries_projector_and_llm_not_the_frozen_unet_and_vae(frozen_unet_model):
    model = frozen_unet_model
    model.train()
    head = model.dream_head
    assert head.vae is not None and head.freeze_unet and head.freeze_vae
    out = model(drawing_batch())
    assert set(out) >= {"loss", "lm_loss", "dream_diffusion_loss"}
    assert float(out["dream_diffusion_loss"]) > 0
    out["loss"].backward()
    assert head.queries.grad is not None and head.queries.grad.abs().sum() > 0
    assert head.condition_projector.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.llm.parameters())
    assert all(not p.requires_grad and p.grad is None for p in head.unet.parameters())
    assert all(not p.requires_grad and p.grad is None for p in head.vae.parameters())
    assert not head.unet.training and not head.vae.training  # frozen parts stay in eval mode


def test_a_batch_with_nothing_to_draw_gives_the_head_zero_gradients():
    model = tiny()
    model.train()
    out = model(drawing_batch(n_dream=0, n_text=2))
    assert float(out["dream_diffusion_loss"]) == 0.0
    out["loss"].backward()
    head = model.dream_head
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert grads and all(g is not None and float(g.abs().sum()) == 0.0 for g in grads)


def test_sample_scale_rule_weighs_the_head_by_its_share_of_the_batch():
    torch.manual_seed(1)
    items = tiny(scale="items")
    samples = tiny(scale="samples")
    samples.load_state_dict(items.state_dict())
    batch = drawing_batch(n_dream=1, n_text=3)
    torch.manual_seed(2)
    a = items(batch)
    torch.manual_seed(2)
    b = samples(batch)
    assert torch.allclose(a["dream_diffusion_loss"], b["dream_diffusion_loss"])
    head_a = float((a["loss"] - a["lm_loss"]).detach())
    head_b = float((b["loss"] - b["lm_loss"]).detach())
    assert head_b == pytest.approx(head_a / 4, rel=1e-4)


def test_bad_head_settings_name_the_key():
    with pytest.raises(ValueError, match="scale"):
        tiny(scale="tokens")
    with pytest.raises(ValueError, match="cfg_dropout"):
        tiny(cfg_dropout=1.5)
    with pytest.raises(ValueError, match="in_channels"):
        tiny(vae=TINY_VAE)  # the pixel-space UNet takes 3 channels, the VAE's latents have 4


def test_missing_target_image_is_an_error_naming_the_sample():
    model = tiny()
    batch = drawing_batch(n_dream=1, n_text=0)
    batch["target_image"] = [None]
    with pytest.raises(ValueError, match="s0"):
        model(batch)


def test_each_head_saves_alone_and_loads_into_a_model_from_elsewhere(tmp_path):
    trained = tiny()
    with torch.no_grad():
        trained.dream_head.queries.add_(1.0)
        for p in trained.llm.parameters():
            p.add_(0.5)
    trained.save_head("dream_diffusion", str(tmp_path / "head"))
    fresh = tiny()
    llm_before = [p.clone() for p in fresh.llm.parameters()]
    fresh.load_checkpoint(str(tmp_path / "head"))
    assert torch.equal(fresh.dream_head.queries, trained.dream_head.queries)
    assert torch.equal(fresh.dream_head.unet.conv_in.weight, trained.dream_head.unet.conv_in.weight)
    assert all(torch.equal(a, b) for a, b in zip(llm_before, fresh.llm.parameters()))  # the LLM is not in it
    with pytest.raises(ValueError, match="no output head"):
        fresh.save_head("other", str(tmp_path / "x"))


def test_cfg_dropout_snr_and_noise_offset_change_the_loss():
    torch.manual_seed(3)
    plain = tiny()
    batch = drawing_batch(n_dream=2, n_text=0)
    losses = {}
    for name, kw in {"plain": {}, "snr": {"snr_gamma": 1.0e-3}, "offset": {"noise_offset": 0.5}}.items():
        model = tiny(**kw)
        model.load_state_dict(plain.state_dict())
        model.train()
        torch.manual_seed(4)
        losses[name] = float(model(batch)["dream_diffusion_loss"])
    assert losses["snr"] < losses["plain"]  # min(SNR, gamma)/SNR < 1 wherever SNR > gamma
    assert losses["offset"] != losses["plain"]
    dropped = tiny(cfg_dropout=0.999)
    dropped.train()
    states = torch.randn(2, dropped.dream_head.num_queries, dropped.llm.hidden_size)
    cond = dropped.dream_head.condition(states)
    torch.manual_seed(5)
    loss_drop = dropped.dream_head.diffusion_loss(cond, torch.zeros(2, 3, 16, 16))
    torch.manual_seed(5)
    loss_zero = dropped.dream_head.diffusion_loss(torch.zeros_like(cond), torch.zeros(2, 3, 16, 16))
    assert torch.allclose(loss_drop, loss_zero)


def test_draw_returns_images_and_guidance_changes_them():
    model = tiny()
    model.eval()
    a = model.draw(["draw a blue square in the top right"], steps=3, generator=torch.Generator().manual_seed(0))
    b = model.draw(["draw a blue square in the top right"], steps=3, guidance_scale=3.0,
                   generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 3, 16, 16) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.allclose(a, b)


def test_generation_draws_where_the_model_writes_dream_and_feeds_the_image_back(monkeypatch):
    model = tiny()
    model.eval()
    lm_head = model.llm.causal_lm.get_output_embeddings()
    with torch.no_grad():  # make <dream> the model's first choice whatever comes before
        lm_head.bias[model.dream_token_id] = 1.0e4
    fed = []
    original = model.feedback_image

    def spy(image):
        fed.append(image.shape)
        return original(image)

    monkeypatch.setattr(model, "feedback_image", spy)
    outs = model.generate_with_images(None, ["draw a green triangle", "draw a red square"], max_new_tokens=3,
                                      max_images=1, steps=2)
    assert [len(o.images) for o in outs] == [1, 1]
    assert outs[0].images[0].shape == (3, 16, 16)
    assert outs[0].text.startswith(DREAM_TOKEN)
    assert fed == [(3, 16, 16), (3, 16, 16)]  # each drawn image went back in as the encoder's input


def test_coordinate_channels_tell_the_unet_where_it_is():
    model = tiny(coord_channels=True, unet={"config": {"in_channels": 5}})
    head = model.dream_head
    x = torch.zeros(2, 3, 16, 16)
    inp = head.unet_input(x)
    assert inp.shape == (2, 5, 16, 16)
    assert float(inp[0, 3, 0, 0]) == -1.0 and float(inp[0, 3, 0, -1]) == 1.0  # x runs left to right
    assert float(inp[0, 4, 0, 0]) == -1.0 and float(inp[0, 4, -1, 0]) == 1.0  # y runs top to bottom
    model.train()
    assert torch.isfinite(model(drawing_batch())["dream_diffusion_loss"])
    model.eval()
    assert model.draw(["draw it"], steps=2).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="coordinate"):
        tiny(coord_channels=True)  # the preset's UNet takes 3 channels in


def test_velocity_prediction_trains_on_the_velocity_and_samples():
    sched = {"config": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                        "prediction_type": "v_prediction"}}
    model = tiny(scheduler=sched)
    head = model.dream_head
    head.train()
    cond = head.condition(torch.randn(2, head.num_queries, model.llm.hidden_size))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(7)
    loss = head.diffusion_loss(cond, images)
    torch.manual_seed(7)  # the same noise and timesteps, by hand
    noise = torch.randn_like(images)
    t = torch.randint(0, 1000, (2,))
    pred = head.run_unet(head.noise_scheduler.add_noise(images, noise, t), t, cond)
    velocity = head.noise_scheduler.get_velocity(images, noise, t)
    assert torch.allclose(loss, (pred - velocity).pow(2).mean(), atol=1e-6)
    assert not torch.allclose(loss, (pred - noise).pow(2).mean(), atol=1e-6)
    model.eval()
    drawn = model.draw(["draw it"], steps=2)
    assert drawn.shape == (1, 3, 16, 16) and torch.isfinite(drawn).all()
    with pytest.raises(ValueError, match="prediction_type"):
        tiny(scheduler={"config": {"prediction_type": "sample"}})


def test_condition_norm_standardises_each_query_feature_over_the_batch_and_keeps_its_statistics():
    from minigpt.models.weights.checkpoint import trained_state_dict

    model = tiny(condition_norm=True)
    head = model.dream_head
    q, d = head.num_queries, model.llm.hidden_size
    # a large constant per query and a small part that differs by request, as in a small LLM's states
    states = torch.randn(1, q, d) * 10 + torch.randn(64, q, d) * 0.1
    head.train()
    normed = []
    head.condition_projector.register_forward_hook(lambda m, i, o: normed.append(i[0]))
    head.condition(states)
    flat = normed[-1].reshape(64, q * d)
    assert torch.allclose(flat.mean(0), torch.zeros(q * d), atol=1e-4)
    assert torch.allclose(flat.std(0, unbiased=False), torch.ones(q * d), atol=1e-2)
    head.condition(states[:1])  # one dream in a training batch: the running statistics, no error
    for _ in range(60):
        head.condition(states)
    head.eval()
    head.condition(states)
    assert normed[-1].std() > 0.5 and normed[-1].mean().abs() < 0.1  # sampling uses what training saw
    saved = trained_state_dict(model)
    assert any(k.endswith("condition_norm.running_var") for k in saved)
    assert not hasattr(tiny().dream_head.condition_norm, "running_var")  # off by default
