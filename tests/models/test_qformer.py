"""BLIP-2 Q-Former + linear projector (``qformer_linear``): shapes, freezing, LAVIS checkpoints, real size."""

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from minigpt.common.config import load_model_preset
from minigpt.common.registry import registry
from minigpt.models.parts.projectors.qformer import QFormerLinearProjector

TINY_QF = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24)
VIS, LLM, NQ = 12, 20, 4
PRESETS = Path(__file__).resolve().parents[2] / "minigpt" / "configs" / "models" / "tinygptv"


def tiny(**kw) -> QFormerLinearProjector:
    args = dict(in_dim=VIS, out_dim=LLM, num_query_token=NQ, hidden_dims=[10], qformer=TINY_QF)
    return QFormerLinearProjector(**{**args, **kw})


def randomized(proj: QFormerLinearProjector, seed: int = 0) -> QFormerLinearProjector:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in proj.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return proj.eval()


def lavis_layout(proj: QFormerLinearProjector, vocab: int = 7) -> dict:
    """The projector's Q-Former under LAVIS BLIP-2 names, plus the text-only parts MiniGPT-4 drops."""
    qf = proj.qformer
    h = qf.config.hidden_size
    sd = {
        "query_tokens": proj.query_tokens,
        "ln_vision.weight": proj.ln_vision.weight,
        "ln_vision.bias": proj.ln_vision.bias,
        "Qformer.bert.embeddings.LayerNorm.weight": qf.layernorm.weight,
        "Qformer.bert.embeddings.LayerNorm.bias": qf.layernorm.bias,
        # text-only parts, present in every BLIP-2 release
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(vocab, h),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(9, h),
        "Qformer.bert.embeddings.position_ids": torch.arange(9)[None],
        "Qformer.cls.predictions.bias": torch.randn(vocab),
        "Qformer.cls.predictions.transform.dense.weight": torch.randn(h, h),
        "visual_encoder.blocks.0.norm1.weight": torch.randn(VIS),
        "t5_proj.weight": torch.randn(5, h),
    }
    for i, layer in enumerate(qf.encoder.layer):
        L = f"Qformer.bert.encoder.layer.{i}."
        parts = {"attention": layer.attention}
        if hasattr(layer, "crossattention"):
            parts["crossattention"] = layer.crossattention
        for name, att in parts.items():
            for lin in ("query", "key", "value"):
                sd[f"{L}{name}.self.{lin}.weight"] = getattr(att.attention, lin).weight
                sd[f"{L}{name}.self.{lin}.bias"] = getattr(att.attention, lin).bias
            sd[f"{L}{name}.output.dense.weight"] = att.output.dense.weight
            sd[f"{L}{name}.output.dense.bias"] = att.output.dense.bias
            sd[f"{L}{name}.output.LayerNorm.weight"] = att.output.LayerNorm.weight
            sd[f"{L}{name}.output.LayerNorm.bias"] = att.output.LayerNorm.bias
        sd[L + "intermediate_query.dense.weight"] = layer.intermediate_query.dense.weight
        sd[L + "intermediate_query.dense.bias"] = layer.intermediate_query.dense.bias
        out_q = layer.output_query
        sd[L + "output_query.dense.weight"], sd[L + "output_query.dense.bias"] = (
            out_q.dense.weight,
            out_q.dense.bias,
        )
        sd[L + "output_query.LayerNorm.weight"] = out_q.LayerNorm.weight
        sd[L + "output_query.LayerNorm.bias"] = out_q.LayerNorm.bias
        # the text tokens' feed-forward, which only the text path uses
        sd[L + "intermediate.dense.weight"] = torch.randn(TINY_QF["intermediate_size"], h)
        sd[L + "output.dense.weight"] = torch.randn(h, TINY_QF["intermediate_size"])
        sd[L + "output.LayerNorm.weight"] = torch.randn(h)
    return {k: v.detach().clone() for k, v in sd.items()}


def lavis_reference(sd: dict, feats: torch.Tensor, n_layers: int, heads: int, freq: int = 2) -> torch.Tensor:
    """LAVIS MiniGPT-4 ``encode_img`` up to the Q-Former output, computed from original-layout tensors."""
    img = F.layer_norm(feats, (feats.shape[-1],), sd["ln_vision.weight"], sd["ln_vision.bias"], eps=1e-5)
    h = sd["query_tokens"].expand(feats.shape[0], -1, -1)
    d = h.shape[-1]
    h = F.layer_norm(
        h,
        (d,),
        sd["Qformer.bert.embeddings.LayerNorm.weight"],
        sd["Qformer.bert.embeddings.LayerNorm.bias"],
        eps=1e-12,
    )

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    def attention(prefix, x, ctx):
        def split(t):
            return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

        q, k, v = (
            split(lin(x, prefix + ".self.query")),
            split(lin(ctx, prefix + ".self.key")),
            split(lin(ctx, prefix + ".self.value")),
        )
        probs = (q @ k.transpose(-1, -2) / (d // heads) ** 0.5).softmax(-1)
        out = (probs @ v).transpose(1, 2).reshape(x.shape)
        ln = prefix + ".output.LayerNorm"
        return F.layer_norm(
            lin(out, prefix + ".output.dense") + x, (d,), sd[ln + ".weight"], sd[ln + ".bias"], eps=1e-12
        )

    for i in range(n_layers):
        L = f"Qformer.bert.encoder.layer.{i}."
        h = attention(L + "attention", h, h)
        if i % freq == 0:
            h = attention(L + "crossattention", h, img)
        inner = F.gelu(lin(h, L + "intermediate_query.dense"))
        ln = L + "output_query.LayerNorm"
        h = F.layer_norm(
            lin(inner, L + "output_query.dense") + h, (d,), sd[ln + ".weight"], sd[ln + ".bias"], eps=1e-12
        )
    return h


def test_shapes_and_linear_layers(caplog):
    assert registry.get_projector_class("qformer_linear") is QFormerLinearProjector
    two = tiny().eval()
    out = two(torch.randn(3, 9, VIS))
    assert out.shape == (3, NQ, LLM) and two.num_output_tokens(9) == NQ
    # TinyGPT-V: Linear(hidden -> 10) then Linear(10 -> LLM), nothing in between
    assert [type(m) for m in two.proj] == [torch.nn.Linear, torch.nn.Linear]
    assert (two.proj[0].in_features, two.proj[0].out_features, two.proj[1].out_features) == (16, 10, LLM)
    for hidden_dims in (None, []):  # MiniGPT-4: one Linear
        one = tiny(hidden_dims=hidden_dims)
        assert len(one.proj) == 1 and (one.proj[0].in_features, one.proj[0].out_features) == (16, LLM)
    layers = two.qformer.encoder.layer
    assert [hasattr(layer, "crossattention") for layer in layers] == [True, False, True]
    assert layers[0].crossattention.attention.key.in_features == VIS
    with caplog.at_level(logging.WARNING):
        tiny(num_query_tokens=8)  # a typo of num_query_token
    assert "num_query_tokens" in caplog.text
    with pytest.raises(ValueError, match="encoder_hidden_size"):
        tiny(qformer={**TINY_QF, "encoder_hidden_size": VIS + 1})


def test_freeze_qformer_freezes_all_but_the_linear_layers():
    frozen = tiny(freeze_qformer=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"proj.0.weight", "proj.0.bias", "proj.1.weight", "proj.1.bias"}
    frozen.train()
    assert frozen.training and frozen.proj.training and not frozen.qformer.training
    x = torch.randn(2, 5, VIS)
    torch.testing.assert_close(frozen(x), frozen(x))  # no dropout in a frozen Q-Former
    frozen(x).sum().backward()
    assert frozen.proj[0].weight.grad is not None and frozen.query_tokens.grad is None
    free = tiny(freeze_qformer=False)
    assert all(p.requires_grad for p in free.parameters())


def test_lavis_checkpoint_loads_and_matches(tmp_path, caplog):
    src = randomized(tiny(freeze_qformer=False))
    sd = lavis_layout(src)
    path = tmp_path / "blip2_pretrained_flant5xxl.pth"
    torch.save({"model": sd, "epoch": 9}, path)  # LAVIS wraps weights in "model"
    with caplog.at_level(logging.INFO, logger="minigpt.models.weights.files"):
        proj = tiny(pretrained=str(path))
    report = proj.load_report
    assert report.missing == [] and report.unexpected == []
    for key in (
        "Qformer.bert.embeddings.word_embeddings.weight",
        "Qformer.cls.predictions.bias",
        "Qformer.bert.encoder.layer.1.output.dense.weight",
        "visual_encoder.blocks.0.norm1.weight",
    ):
        assert key in report.ignored
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        "query_tokens" in report.loaded
        and "qformer.encoder.layer.2.crossattention.attention.value.weight" in report.loaded
    )
    proj.proj.load_state_dict(src.proj.state_dict())  # the linear layers are not part of BLIP-2's file
    proj.eval()
    feats = torch.randn(2, 6, VIS)
    with torch.no_grad():
        out = proj(feats)
        torch.testing.assert_close(out, src(feats))
        want = proj.proj(lavis_reference(sd, feats, n_layers=3, heads=2))
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def test_unexpected_and_missing_keys_are_reported(tmp_path, caplog):
    sd = lavis_layout(randomized(tiny()))
    sd["Qformer.bert.encoder.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(3, 8)
    del sd["Qformer.bert.encoder.layer.2.crossattention.self.key.bias"]
    path = tmp_path / "blip2.pth"
    torch.save({"model": sd}, path)
    with caplog.at_level(logging.WARNING):
        proj = tiny(pretrained=str(path))
    assert proj.load_report.unexpected == [
        "Qformer.bert.encoder.layer.0.attention.self.distance_embedding.weight"
    ]
    assert proj.load_report.missing == ["qformer.encoder.layer.2.crossattention.attention.key.bias"]
    assert "distance_embedding" in caplog.text and "crossattention.attention.key.bias" in caplog.text
    assert "proj.0" not in caplog.text  # the linear layers are expected to be absent


def test_missing_corrupt_and_misshapen_files_name_the_path(tmp_path):
    missing = tmp_path / "absent" / "blip2.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        tiny(pretrained=str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(RuntimeError, match=str(corrupt)):
        tiny(pretrained=str(corrupt))
    other = tmp_path / "other_queries.pth"
    torch.save({"model": lavis_layout(tiny(num_query_token=NQ + 1))}, other)
    with pytest.raises(ValueError, match="query_tokens"):
        tiny(pretrained=str(other))


def _bert_layer_query_path(h: int, inter: int) -> int:
    """Self-attention (q, k, v, output dense, LayerNorm) + the query feed-forward of one BERT layer."""
    attn = 4 * (h * h + h) + 2 * h
    ffn = (h * inter + inter) + (inter * h + h) + 2 * h
    return attn + ffn


def test_real_size_parameter_count_on_meta(tmp_path):
    # Expected from the published architecture: BLIP-2 (Li et al. 2023, arXiv:2301.12597, sec. 3.1)
    # initialises the Q-Former from BERT-base (hidden 768, 12 layers, FFN 3072), inserts cross-attention
    # to the image every other block (LAVIS Blip2Base.init_Qformer: cross_attention_freq=2) with keys/values
    # from the 1408-wide ViT-g, and learns 32 queries of 768; ln_vision is a LayerNorm over 1408.
    # MiniGPT-4 (minigpt4/models/minigpt4.py, init_Qformer) deletes the text embeddings, the text FFNs
    # (`intermediate`/`output`) and the LM head, which leaves:
    h, inter, vis, layers, queries = 768, 3072, 1408, 12, 32
    cross = (h * h + h) + 2 * (vis * h + h) + (h * h + h) + 2 * h
    kept = layers * _bert_layer_query_path(h, inter) + (layers // 2) * cross + 2 * h + queries * h + 2 * vis
    with torch.device("meta"):
        proj = QFormerLinearProjector(
            in_dim=1408, out_dim=2560, hidden_dims=[4096], pretrained=str(tmp_path / "absent.pth")
        )  # meta: file not read
    n_qformer = sum(p.numel() for n, p in proj.named_parameters() if not n.startswith("proj."))
    assert abs(n_qformer - kept) / kept < 0.005, n_qformer
    # TinyGPT-V's projection: Linear(768 -> 4096) + Linear(4096 -> 2560 = Phi-2's width)
    assert sum(p.numel() for p in proj.proj.parameters()) == (768 * 4096 + 4096) + (4096 * 2560 + 2560)
    # Cross-check with the paper's total: "Q-Former contains 188M parameters", which counts the parts
    # MiniGPT-4 drops: BERT's word (30522 x 768) and position (512 x 768) embeddings and 12 text FFNs.
    text_parts = 30522 * h + 512 * h + layers * ((h * inter + inter) + (inter * h + h) + 2 * h)
    assert abs(n_qformer + text_parts - 188e6) / 188e6 < 0.015


@pytest.mark.parametrize("preset", ["stage1_2_3.yaml", "stage4.yaml"])
def test_tinygptv_presets_projector_block_builds_on_meta(preset, monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))
    # stage4 inherits its projector from stage1_2_3 (base:)
    block = OmegaConf.to_container(OmegaConf.create(load_model_preset(PRESETS / preset)).projector, resolve=True)
    kwargs = {k: v for k, v in block.items() if k not in ("name", "freeze")}  # as MultimodalLLM passes them
    with torch.device("meta"):
        proj = registry.get_projector_class(block["name"])(in_dim=1408, out_dim=2560, **kwargs)
    assert proj.num_output_tokens(257) == 32 and len(proj.proj) == 2
    assert not proj.query_tokens.requires_grad and proj.proj[1].weight.requires_grad


def test_tiny_eva_qformer_composition_trains_and_generates():
    # MiniGPT-4's composition at toy size: EVA ViT -> ln_vision + Q-Former -> one Linear -> the tiny LLM
    cls = registry.get_model_class("minigpt4")
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    cfg.vision_encoder = {
        "name": "eva_vit_g",
        "image_size": 28,
        "width": 32,
        "depth": 2,
        "num_heads": 4,
        "mlp_dim": 48,
        "precision": "fp16",
        "freeze": True,
    }
    cfg.projector = {
        "name": "qformer_linear",
        "num_query_token": NQ,
        "hidden_dims": None,
        "qformer": TINY_QF,
        "freeze_qformer": True,
        "freeze": False,
    }
    torch.manual_seed(0)
    model = cls.from_config(cfg)
    assert model.num_image_tokens() == NQ
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert "vision_encoder" not in trainable and "projector" in trainable
    model.train()
    images = torch.randn(2, 3, 28, 28)
    samples = {
        "image": images,
        "instruction_input": ["<Img><ImageHere></Img> What is it?"] * 2,
        "answer": ["a red circle", "a blue square"],
    }
    out = model(samples)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.projector.proj[0].weight.grad is not None
    assert model.projector.query_tokens.grad is None
    model.eval()
    texts = model.generate(images, ["<Img><ImageHere></Img> What is it?"] * 2, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
