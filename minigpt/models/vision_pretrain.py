"""Stage 0 for random-init vision encoders: label every visual token with the region it falls in.

The real-size families start from a pretrained vision encoder (EVA-CLIP, CLIP). A ``tiny`` preset's
encoder starts from random weights, and learning what a shape looks like through the LLM's answer
loss alone is slow: a caption or an answer names a shape once, behind a long chain of untrained
layers. Stage 0 gives the tiny encoder what supervised pretraining gives a real one, cheaply: every
token of the encoder's grid is classified by the attributes of the annotated box its centre falls
in, or as background. The checkpoint names the encoder ``vision_encoder.*``, as the families do, so
the next stage loads it by stage name like any other stage's result.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from minigpt.common.registry import registry
from minigpt.models.base_model import BaseModel
from minigpt.models.grid_code import grid_value_code

BACKGROUND = 0  # class index of tokens outside every box; field classes start at 1
BOX_KEY = "box"  # region_targets' key for each token's box, ``[B, T, 4]`` (zeros outside boxes)
BOX_CODE_KEY = "box_code"  # the head that writes each token's box corners in the LLM's grid code


def region_targets(
    regions: Sequence[Sequence[Mapping[str, Any]]],
    fields: Mapping[str, Sequence[str]],
    grid: int,
    sample_ids: Sequence[Any] = (),
) -> Dict[str, torch.Tensor]:
    """Per-token class indices ``{field: [B, grid*grid]}`` from each image's labelled boxes.

    ``regions[b]`` lists image ``b``'s boxes as ``{"box": [x1, y1, x2, y2], <field>: <class>}`` with
    the box in fractions of the image size. A token (row-major) takes the classes of the box its
    centre falls in (a later box wins where boxes overlap), background otherwise; ``out["box"]``
    holds that box's corners per token (zeros outside). A class a field does not list is an error
    naming the sample.
    """
    index = {f: {name: i + 1 for i, name in enumerate(classes)} for f, classes in fields.items()}
    # the boxes of the whole batch flattened to one list (Python only reads labels here), then one
    # broadcast comparison against every token centre
    owner, corners, labels = [], [], {f: [] for f in fields}
    for b, boxes in enumerate(regions):
        for region in boxes or ():
            owner.append(b)
            corners.append([float(v) for v in region["box"]])
            for f in fields:
                name = region.get(f)
                if name not in index[f]:
                    sid = sample_ids[b] if b < len(sample_ids) else f"#{b}"
                    raise ValueError(
                        f"sample {sid}: region label {f}={name!r} is not one of model.label_fields.{f} "
                        f"({', '.join(fields[f])})"
                    )
                labels[f].append(index[f][name])
    n_img, n_tok = len(regions), grid * grid
    out = {f: torch.full((n_img, n_tok), BACKGROUND, dtype=torch.long) for f in fields}
    out[BOX_KEY] = torch.zeros(n_img, n_tok, 4)  # the box (fractions) each token falls in
    if not owner:
        return out
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    cy, cx = (c.flatten() for c in torch.meshgrid(centres, centres, indexing="ij"))  # [T] row-major
    box = torch.tensor(corners)  # [R, 4]
    inside = (
        (cx >= box[:, 0:1]) & (cx < box[:, 2:3]) & (cy >= box[:, 1:2]) & (cy < box[:, 3:4])
    )  # [R, T]
    # a later box wins where boxes overlap: for each (image, token) keep the last region covering it
    owner_t = torch.tensor(owner)
    same_image = owner_t[:, None] == torch.arange(n_img)[None, :]  # [R, B]
    covered = same_image[:, :, None] & inside[:, None, :]  # [R, B, T]
    order = torch.arange(1, len(owner) + 1)[:, None, None]
    winner = (covered * order).amax(0)  # [B, T]: 1-based region index, 0 = background
    hit = winner > 0
    pick = (winner - 1).clamp(min=0)
    for f in fields:
        out[f] = torch.where(hit, torch.tensor(labels[f])[pick], out[f])
    out[BOX_KEY] = torch.where(hit[..., None], box[pick], out[BOX_KEY])
    return out


class VisionPretrain(BaseModel):
    """A vision encoder plus one linear head per label field over its tokens. YAML name ``vision_pretrain``.

    ``forward(samples)`` takes ``{"image": [B, 3, H, W], "regions": [[{"box", <field>: <class>}, ...]]}``
    and returns the mean over fields of the per-token cross-entropy, plus ``box_loss_weight`` times
    the L1 error of the box head (each token inside a box predicts its corners; off when the
    weight is 0), plus ``box_code_loss_weight`` times the squared error of the box-code head (each
    token inside a box writes its four corners in the sinusoidal code of the LLM's grid tokens,
    ``box_code_dim`` numbers per corner: :mod:`minigpt.models.grid_code`; off when the weight is 0),
    with each field's token accuracy (``acc_<field>``, over tokens inside boxes), ``box_l1`` and
    ``box_code_mse`` for the log.
    """

    PRETRAINED_MODEL_CONFIG_DICT = {
        "tinygptv_tiny": "configs/models/vision_pretrain/tinygptv_tiny.yaml",
        "lavin_tiny": "configs/models/vision_pretrain/lavin_tiny.yaml",
    }
    DEFAULT_MODEL_TYPE = "tinygptv_tiny"

    def __init__(
        self,
        vision_encoder: nn.Module,
        label_fields: Mapping[str, Sequence[str]],
        box_loss_weight: float = 0.0,
        box_code_loss_weight: float = 0.0,
        box_code_dim: int = 16,
    ) -> None:
        super().__init__()
        for reserved in (BOX_KEY, BOX_CODE_KEY):
            if reserved in label_fields:
                raise ValueError(f"vision_pretrain: {reserved!r} is reserved for a box head, not a label field")
        if not label_fields:
            raise ValueError("vision_pretrain: model.label_fields must name at least one field and its classes")
        self.vision_encoder = vision_encoder
        self.label_fields: Dict[str, List[str]] = {str(f): [str(c) for c in cs] for f, cs in label_fields.items()}
        for f, classes in self.label_fields.items():
            if not classes or len(set(classes)) != len(classes):
                raise ValueError(f"vision_pretrain: model.label_fields.{f} must list distinct class names")
        n_tokens = int(vision_encoder.num_tokens)
        self.grid = math.isqrt(n_tokens)
        if self.grid * self.grid != n_tokens:
            raise ValueError(f"vision_pretrain: the encoder's {n_tokens} tokens do not form a square grid")
        # named so that checkpoint keys start with STAGE0_HEADS_PREFIX, which the families skip on load
        heads = {f: nn.Linear(int(vision_encoder.out_dim), len(cs) + 1) for f, cs in self.label_fields.items()}
        # the box head: every token inside a box regresses that box's corners, so the tokens carry
        # where their object is, which grounding answers and "left of" questions read back
        self.box_loss_weight = float(box_loss_weight)
        if self.box_loss_weight > 0:
            heads[BOX_KEY] = nn.Linear(int(vision_encoder.out_dim), 4)
        # the box-code head: the corners again, in the code the LLM's <0>..<100> tokens start with, so
        # matching a written box to its tokens (identify) or writing a token's box (refer) is linear
        self.box_code_loss_weight = float(box_code_loss_weight)
        self.box_code_dim = int(box_code_dim)
        if self.box_code_loss_weight > 0:
            if self.box_code_dim < 2:
                raise ValueError(f"vision_pretrain: model.box_code_dim must be at least 2, got {box_code_dim}")
            heads[BOX_CODE_KEY] = nn.Linear(int(vision_encoder.out_dim), 4 * self.box_code_dim)
        self.heads = nn.ModuleDict(heads)
        self.cfg: DictConfig | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> "VisionPretrain":
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        block = cfg.vision_encoder
        encoder = registry.get_vision_encoder_class(str(block.name)).from_config(block)
        fields = OmegaConf.to_container(cfg.label_fields, resolve=True)
        model = cls(
            encoder,
            fields,
            box_loss_weight=float(cfg.box_loss_weight),
            box_code_loss_weight=float(cfg.box_code_loss_weight),
            box_code_dim=int(cfg.box_code_dim),
        )
        model.cfg = cfg
        if cfg.get("ckpt"):
            from minigpt.models.weights.checkpoint import expand_checkpoints, load_trained

            for path in expand_checkpoints(cfg.ckpt):
                load_trained(model, path)
        return model

    def load_checkpoint(self, path: str) -> List[str]:
        from minigpt.models.weights.checkpoint import load_trained

        loaded, _ = load_trained(self, str(path))
        return loaded

    def param_groups(self, weight_decay: float, projector_lr_scale: float = 1.0) -> List[Dict[str, Any]]:
        """AdamW groups: no decay on biases, norms and position embeddings (``projector_lr_scale`` unused)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                skip = p.ndim < 2 or "norm" in name or name.endswith(".bias") or "pos_embed" in name
                (no_decay if skip else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        ]

    def logits(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{field: [B, grid*grid, n_classes + 1]}`` for a batch of images."""
        feats = self.vision_encoder(images)
        if feats.shape[1] != self.grid * self.grid:
            raise ValueError(f"vision_pretrain: encoder returned {feats.shape[1]} tokens, expected {self.grid ** 2}")
        return {f: head(feats) for f, head in self.heads.items()}

    def forward(self, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        images = samples.get("image")
        if images is None or "regions" not in samples:
            raise KeyError("vision_pretrain needs batches with 'image' and 'regions' (a region-label dataset)")
        targets = region_targets(samples["regions"], self.label_fields, self.grid, samples.get("sample_id") or ())
        logits = self.logits(images.to(self.device))
        out: Dict[str, torch.Tensor] = {}
        losses = []
        for f, lg in logits.items():
            if f in (BOX_KEY, BOX_CODE_KEY):
                continue
            tgt = targets[f].to(lg.device)
            losses.append(F.cross_entropy(lg.flatten(0, 1), tgt.flatten()))
            with torch.no_grad():
                inside = tgt != BACKGROUND
                hit = (lg.argmax(-1) == tgt) & inside
                out[f"acc_{f}"] = hit.sum().float() / inside.sum().clamp(min=1)
        loss = torch.stack(losses).mean()
        inside = (targets[next(iter(self.label_fields))] != BACKGROUND).to(images.device)  # [B, T]
        boxes = targets[BOX_KEY].to(images.device)[inside]  # [N, 4] corners (fractions) of in-box tokens
        if BOX_KEY in logits:
            pred = logits[BOX_KEY].sigmoid()[inside]
            box_l1 = F.l1_loss(pred, boxes) if inside.any() else pred.sum()
            out["box_l1"] = box_l1.detach()
            loss = loss + self.box_loss_weight * box_l1
        if BOX_CODE_KEY in logits:
            pred = logits[BOX_CODE_KEY][inside]  # [N, 4 * box_code_dim]
            code = grid_value_code(boxes, self.box_code_dim).flatten(1)  # [N, 4, dim] -> [N, 4 * dim]
            box_code_mse = F.mse_loss(pred, code) if inside.any() else pred.sum()
            out["box_code_mse"] = box_code_mse.detach()
            loss = loss + self.box_code_loss_weight * box_code_mse
        out["loss"] = loss
        # the tokens this step trains on are the labelled visual tokens (the runner's tokens/s)
        out["n_tokens"] = torch.tensor(images.shape[0] * self.grid * self.grid)
        return out
