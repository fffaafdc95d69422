"""Stage 0 for random-init vision encoders: label every visual token with the region it falls in.

The real-size families start from a pretrained vision encoder (EVA-CLIP, CLIP). A ``tiny`` preset's
encoder starts from random weights, and learning what a shape looks like through the LLM's answer
loss alone is slow: a caption or an answer names a shape once, behind a long chain of untrained
layers. Stage 0 gives the tiny encoder what supervised pretraining gives a real one, cheaply: every
token of the encoder's grid is classified by the attributes of the annotated box its centre falls
in, or as background. The checkpoint names the encoder ``vision_encoder.*``, as the families do, so
the next stage loads it by stage name like any other stage's result.

A second objective (``objective: scene``) is for encoders whose tokens are summaries rather than a
grid, such as ``clip_vit_cls`` (LaVIN's class-token states): every token predicts the whole scene,
which (kind, colour) combinations are present, how many objects there are and where each present
combination's centre is.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Dict, List, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from minigpt.common.registry import registry
from minigpt.models.base_model import BaseModel
from minigpt.models.grid_code import grid_value_code, word_codes

BACKGROUND = 0  # class index of tokens outside every box; field classes start at 1
BOX_KEY = "box"  # region_targets' key for each token's box, ``[B, T, 4]`` (zeros outside boxes)
BOX_CODE_KEY = "box_code"  # the head that writes each token's box corners in the LLM's grid code
WORD_CODE_KEY = "word_code"  # the head that writes each token's kind and colour words in the LLM's word code
PRESENCE_KEY = "presence"  # the head that makes every grid token say which combinations the whole picture holds
# model.objective: per-token region labels; the whole scene from every token; or both, the scene from the
# class-token states and the region labels on the last block's patch tokens of one tower (clip_vit_cls)
OBJECTIVES = ("patches", "scene", "scene+patches")
SCENE_HEADS = ("present", "count", "centre")


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

def scene_targets(
    regions: Sequence[Sequence[Mapping[str, Any]]],
    fields: Mapping[str, Sequence[str]],
    max_objects: int,
    sample_ids: Sequence[Any] = (),
) -> Dict[str, torch.Tensor]:
    """Whole-scene targets of each image from its labelled boxes (``objective: scene``).

    The combinations are the product of the fields' classes in order (kind x colour: 18), and
    ``out["present"]`` ``[B, C]`` marks those in the image, ``out["count"]`` ``[B]`` is its number of
    boxes and ``out["centre"]`` ``[B, C, 2]`` each present combination's box centre (fractions; the
    last box of a repeated combination). An unknown class or more than ``max_objects`` boxes is an
    error naming the sample.
    """
    names = list(fields)
    combos = {c: i for i, c in enumerate(itertools.product(*(fields[f] for f in names)))}
    n = len(regions)
    out = {"present": torch.zeros(n, len(combos)), "count": torch.zeros(n, dtype=torch.long),
           "centre": torch.zeros(n, len(combos), 2)}
    for b, boxes in enumerate(regions):
        boxes = list(boxes or ())
        sid = sample_ids[b] if b < len(sample_ids) else f"#{b}"
        if len(boxes) > max_objects:
            raise ValueError(f"sample {sid}: {len(boxes)} labelled boxes, more than model.max_objects={max_objects}")
        out["count"][b] = len(boxes)
        for region in boxes:
            key = tuple(region.get(f) for f in names)
            if key not in combos:
                bad = next(f for f in names if region.get(f) not in fields[f])
                raise ValueError(f"sample {sid}: region label {bad}={region.get(bad)!r} is not one of "
                                 f"model.label_fields.{bad} ({', '.join(fields[bad])})")
            x1, y1, x2, y2 = (float(v) for v in region["box"])
            out["present"][b, combos[key]] = 1.0
            out["centre"][b, combos[key]] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2])
    return out


class TokenwiseLinear(nn.Module):
    """One Linear layer per token position: ``[B, T, D] -> [B, T, O]`` with its own weights for each ``t``."""

    def __init__(self, n_tokens: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per token
        self.weight = nn.Parameter(torch.empty(n_tokens, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_tokens, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btd,tdo->bto", x, self.weight) + self.bias


class VisionPretrain(BaseModel):
    """A vision encoder plus linear heads over its tokens. YAML name ``vision_pretrain``.

    ``forward(samples)`` takes ``{"image": [B, 3, H, W], "regions": [[{"box", <field>: <class>}, ...]]}``.
    With ``objective: patches`` (the encoder's tokens form a grid) it returns the mean over fields
    of the per-token cross-entropy, plus ``box_loss_weight`` times the L1 error of the box head (each
    token inside a box predicts its corners; off when the weight is 0), plus ``box_code_loss_weight``
    times the squared error of the box-code head (each token inside a box writes its four corners in
    the sinusoidal code of the LLM's grid tokens, ``box_code_dim`` numbers per corner:
    :mod:`minigpt.models.grid_code`; off when the weight is 0), plus ``presence_loss_weight`` times the
    binary cross-entropy of each background token's guess of which field combinations the whole picture
    holds (summed over the combinations; off when the weight is 0), plus ``word_code_loss_weight`` times the
    squared error of the word-code head (each token inside a box writes the sum of its kind's and colour's
    :func:`~minigpt.models.grid_code.word_codes`; off when the weight is 0), with each field's token accuracy
    (``acc_<field>``, over tokens inside boxes), ``box_l1``, ``box_code_mse``, ``word_code_mse`` and ``acc_presence``
    for the log. With
    ``objective: scene`` every token has its own heads predicting the whole scene
    (:func:`scene_targets`): binary cross-entropy of the present combinations plus cross-entropy of
    the object count plus ``box_loss_weight`` times the L1 error of the present combinations'
    centres, each averaged over tokens; the log gets the last token's ``acc_present`` (images whose
    combinations are all right), ``acc_count`` and ``centre_l1``.
    """

    PRETRAINED_MODEL_CONFIG_DICT = {
        "tinygptv_tiny": "configs/models/vision_pretrain/tinygptv_tiny.yaml",
        "lavin_tiny": "configs/models/vision_pretrain/lavin_tiny.yaml",
        "lavin_tiny_scene": "configs/models/vision_pretrain/lavin_tiny_scene.yaml",
    }
    DEFAULT_MODEL_TYPE = "tinygptv_tiny"

    def __init__(
        self,
        vision_encoder: nn.Module,
        label_fields: Mapping[str, Sequence[str]],
        box_loss_weight: float = 0.0,
        objective: str = "patches",
        max_objects: int = 3,
        box_code_loss_weight: float = 0.0,
        box_code_dim: int = 16,
        centre_bins: int = 0,
        presence_loss_weight: float = 0.0,
        word_code_loss_weight: float = 0.0,
        word_code_dim: int = 16,
        word_code_seed: int = 0,
    ) -> None:
        super().__init__()
        reserved = [f for f in label_fields if f in (BOX_KEY, BOX_CODE_KEY, WORD_CODE_KEY, PRESENCE_KEY, *SCENE_HEADS)]
        if reserved:
            raise ValueError(f"vision_pretrain: {reserved[0]!r} names a head, not a label field")
        if not label_fields:
            raise ValueError("vision_pretrain: model.label_fields must name at least one field and its classes")
        self.vision_encoder = vision_encoder
        self.label_fields: Dict[str, List[str]] = {str(f): [str(c) for c in cs] for f, cs in label_fields.items()}
        for f, classes in self.label_fields.items():
            if not classes or len(set(classes)) != len(classes):
                raise ValueError(f"vision_pretrain: model.label_fields.{f} must list distinct class names")
        if objective not in OBJECTIVES:
            raise ValueError(f"vision_pretrain: model.objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.max_objects = int(max_objects)
        self.box_loss_weight = float(box_loss_weight)
        self.box_code_loss_weight = float(box_code_loss_weight)
        self.box_code_dim = int(box_code_dim)
        self.centre_bins = int(centre_bins)
        if self.centre_bins < 0 or self.centre_bins == 1:
            raise ValueError(f"vision_pretrain: model.centre_bins must be 0 (regress the centres) or at least 2, got {centre_bins}")
        self.presence_loss_weight = float(presence_loss_weight)
        if self.box_code_loss_weight > 0 and self.box_code_dim < 2:
            raise ValueError(f"vision_pretrain: model.box_code_dim must be at least 2, got {box_code_dim}")
        self.word_code_loss_weight = float(word_code_loss_weight)
        if self.word_code_loss_weight > 0:
            if objective != "patches":
                raise ValueError("vision_pretrain: model.word_code_loss_weight is for objective patches")
            codes = word_codes(int(word_code_dim), int(word_code_seed))
            unknown = [(f, c) for f, cs in self.label_fields.items() for c in cs if c not in codes]
            if unknown:
                raise ValueError(f"vision_pretrain: model.label_fields.{unknown[0][0]} class {unknown[0][1]!r} is not a "
                                 f"word of the synthetic world ({', '.join(codes)}), so it has no word code")
            # per field [n_classes + 1, dim]: row 0 (background) zeros, then each class's code
            for f, cs in self.label_fields.items():
                table = torch.cat([torch.zeros(1, int(word_code_dim)), torch.stack([codes[c] for c in cs])])
                self.register_buffer(f"word_code_{f}", table, persistent=False)
        n_tokens, dim = int(vision_encoder.num_tokens), int(vision_encoder.out_dim)
        self.n_tokens = n_tokens
        heads: Dict[str, nn.Module] = {}
        if objective == "scene+patches":
            if not hasattr(vision_encoder, "cls_and_patches"):
                raise ValueError("vision_pretrain: model.objective scene+patches needs an encoder with class-token "
                                 f"states and patch tokens (clip_vit_cls), not {type(vision_encoder).__name__}")
            grid = int(vision_encoder.image_size) // int(vision_encoder.model.config.patch_size)
            heads.update(self._patch_heads(dim, grid * grid))
        if objective in ("scene", "scene+patches"):
            heads.update(self._scene_heads(n_tokens, dim))
        else:
            heads.update(self._patch_heads(dim, n_tokens))
        if self.presence_loss_weight > 0 and objective != "patches":
            raise ValueError("vision_pretrain: model.presence_loss_weight is for objective patches "
                             f"(objective {objective} has the scene's own present head)")
        # named so that checkpoint keys start with STAGE0_HEADS_PREFIX, which the families skip on load
        self.heads = nn.ModuleDict(heads)
        self.cfg: DictConfig | None = None

    def _patch_heads(self, dim: int, n_patches: int) -> Dict[str, nn.Module]:
        self.grid = math.isqrt(n_patches)
        if self.grid * self.grid != n_patches:
            raise ValueError(f"vision_pretrain: the encoder's {n_patches} tokens do not form a square grid "
                             "(model.objective: scene reads tokens that are not a grid)")
        heads: Dict[str, nn.Module] = {f: nn.Linear(dim, len(cs) + 1) for f, cs in self.label_fields.items()}
        # the box head: every token inside a box regresses that box's corners, so the tokens carry
        # where their object is, which grounding answers and "left of" questions read back
        if self.box_loss_weight > 0:
            heads[BOX_KEY] = nn.Linear(dim, 4)
        # the box-code head: the corners again, in the code the LLM's <0>..<100> tokens start with, so
        # matching a written box to its tokens (identify) or writing a token's box (refer) is linear
        if self.box_code_loss_weight > 0:
            heads[BOX_CODE_KEY] = nn.Linear(dim, 4 * self.box_code_dim)
        # the presence head: every background token says which (kind, colour) pairs the whole picture
        # holds, so "what color is the circle?" can be refused when no token is a circle by reading the
        # background, not by noticing that an attention lookup found nothing. Tokens on a shape keep
        # their capacity for its kind, colour and box (asked of every token, the pairs cost those).
        # the word-code head: every token inside a shape writes the sum of its kind word's and colour word's
        # codes, the vectors the LLM's embeddings of those words start with (llm.word_code_init), so finding
        # the shape a question names is a dot product between the word and the visual tokens
        if self.word_code_loss_weight > 0:
            heads[WORD_CODE_KEY] = nn.Linear(dim, int(getattr(self, f"word_code_{next(iter(self.label_fields))}").shape[1]))
        if self.presence_loss_weight > 0:
            heads[PRESENCE_KEY] = nn.Linear(dim, math.prod(len(cs) for cs in self.label_fields.values()))
        return heads

    def _scene_heads(self, n_tokens: int, dim: int) -> Dict[str, nn.Module]:
        n_combos = math.prod(len(cs) for cs in self.label_fields.values())
        heads: Dict[str, nn.Module] = {"present": TokenwiseLinear(n_tokens, dim, n_combos),
                                       "count": TokenwiseLinear(n_tokens, dim, self.max_objects + 1)}
        if self.box_loss_weight > 0:  # where each present combination is: what "left of" questions read
            # its x and y regressed, or each classified into centre_bins equal stripes of the image
            heads["centre"] = TokenwiseLinear(n_tokens, dim, 2 * n_combos * max(1, self.centre_bins))
        return heads

    @classmethod
    def from_config(cls, cfg: Any) -> "VisionPretrain":
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        block = cfg.vision_encoder
        encoder = registry.get_vision_encoder_class(str(block.name)).from_config(block)
        fields = OmegaConf.to_container(cfg.label_fields, resolve=True)
        model = cls(encoder, fields, box_loss_weight=float(cfg.get("box_loss_weight", 0.0)),
                    objective=str(cfg.objective), max_objects=int(cfg.max_objects),
                    box_code_loss_weight=float(cfg.get("box_code_loss_weight", 0.0)),
                    box_code_dim=int(cfg.get("box_code_dim", 16)), centre_bins=int(cfg.get("centre_bins", 0)),
                    presence_loss_weight=float(cfg.get("presence_loss_weight", 0.0)),
                    word_code_loss_weight=float(cfg.get("word_code_loss_weight", 0.0)),
                    word_code_dim=int(cfg.get("word_code_dim", 16)), word_code_seed=int(cfg.get("word_code_seed", 0)))
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
        """``{head: [B, tokens, outputs]}`` for a batch of images (patch heads: ``n_classes + 1`` per field)."""
        if self.objective == "scene+patches":
            feats, patches = self.vision_encoder.cls_and_patches(images)
        else:
            feats = patches = self.vision_encoder(images)
        if feats.shape[1] != self.n_tokens:
            raise ValueError(f"vision_pretrain: encoder returned {feats.shape[1]} tokens, expected {self.n_tokens}")
        return {f: head(feats if f in SCENE_HEADS else patches) for f, head in self.heads.items()}

    def forward(self, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        images = samples.get("image")
        if images is None or "regions" not in samples:
            raise KeyError("vision_pretrain needs batches with 'image' and 'regions' (a region-label dataset)")
        logits = self.logits(images.to(self.device))
        out: Dict[str, torch.Tensor] = {}
        losses = []
        if self.objective != "scene":
            losses.append(self._patch_loss(logits, samples, out))
        if self.objective != "patches":
            losses.append(self._scene_loss(logits, samples, out))
        out["loss"] = torch.stack(losses).sum()
        # the tokens this step trains on (the runner's tokens/s): the labelled patch tokens, else the scene's
        out["n_tokens"] = torch.tensor(images.shape[0] * (self.grid**2 if self.objective != "scene" else self.n_tokens))
        return out

    def _patch_loss(self, logits: Dict[str, torch.Tensor], samples: Dict[str, Any], out: Dict[str, torch.Tensor]):
        targets = region_targets(samples["regions"], self.label_fields, self.grid, samples.get("sample_id") or ())
        losses = []
        for f in self.label_fields:
            lg, tgt = logits[f], targets[f].to(logits[f].device)
            losses.append(F.cross_entropy(lg.flatten(0, 1), tgt.flatten()))
            with torch.no_grad():
                inside = tgt != BACKGROUND
                hit = (lg.argmax(-1) == tgt) & inside
                out[f"acc_{f}"] = hit.sum().float() / inside.sum().clamp(min=1)
        loss = torch.stack(losses).mean()
        inside = (targets[next(iter(self.label_fields))] != BACKGROUND).to(loss.device)  # [B, T]
        boxes = targets[BOX_KEY].to(loss.device)[inside]  # [N, 4] corners (fractions) of in-box tokens
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
        if WORD_CODE_KEY in logits:
            pred = logits[WORD_CODE_KEY][inside]  # [N, word_code_dim]
            code = sum(getattr(self, f"word_code_{f}")[targets[f].to(loss.device)[inside]] for f in self.label_fields)
            word_code_mse = F.mse_loss(pred, code) if inside.any() else pred.sum()
            out["word_code_mse"] = word_code_mse.detach()
            loss = loss + self.word_code_loss_weight * word_code_mse
        if PRESENCE_KEY in logits:
            presence = self._presence_loss(logits[PRESENCE_KEY], samples, ~inside, out)
            loss = loss + self.presence_loss_weight * presence
        return loss

    def _presence_loss(self, logits: torch.Tensor, samples: Dict[str, Any], background: torch.Tensor,
                       out: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy of each background token's guess (``logits`` ``[B, T, C]``, ``background``
        ``[B, T]``) of the picture's present combinations."""
        present = scene_targets(samples["regions"], self.label_fields, self.max_objects,
                                samples.get("sample_id") or ())["present"].to(logits.device)  # [B, C]
        target = present[:, None].expand_as(logits)[background]  # [N, C] over the background tokens
        guess = logits[background]
        if not background.any():
            return guess.sum()
        # summed over the combinations, as the scene objective's present head (a mean learns too little)
        loss = F.binary_cross_entropy_with_logits(guess, target, reduction="sum") / guess.shape[0]
        with torch.no_grad():  # background tokens that name exactly their picture's combinations
            out["acc_presence"] = ((guess > 0).float() == target).all(-1).float().mean()
        return loss

    def _scene_loss(self, logits: Dict[str, torch.Tensor], samples: Dict[str, Any], out: Dict[str, torch.Tensor]):
        targets = scene_targets(samples["regions"], self.label_fields, self.max_objects, samples.get("sample_id") or ())
        present = targets["present"].to(logits["present"].device)  # [B, C]
        n_tok = logits["present"].shape[1]
        # every token answers for the whole scene: targets repeat along the token axis. Summed over the
        # combinations (a mean would weigh the whole set like the one count answer, and it learnt nothing)
        loss = F.binary_cross_entropy_with_logits(
            logits["present"], present[:, None].expand(-1, n_tok, -1), reduction="sum") / (present.shape[0] * n_tok)
        count = targets["count"].to(present.device)
        loss = loss + F.cross_entropy(logits["count"].flatten(0, 1), count.repeat_interleave(n_tok))
        if "centre" in logits:
            mask = present.bool()[:, None].expand(-1, n_tok, -1)  # [B, T, C]
            centre = targets["centre"].to(present.device)[:, None].expand(-1, n_tok, -1, -1)  # [B, T, C, 2]
            if self.centre_bins:
                lg = logits["centre"].unflatten(-1, (-1, 2, self.centre_bins))[mask]  # [N, 2, bins]
                stripe = (centre[mask] * self.centre_bins).long().clamp(0, self.centre_bins - 1)  # [N, 2]
                centre_loss = F.cross_entropy(lg.flatten(0, 1), stripe.flatten()) if mask.any() else lg.sum() * 0
                with torch.no_grad():  # the last token's stripes of the present combinations
                    last = mask[:, -1]  # [B, C]
                    guess = logits["centre"][:, -1].unflatten(-1, (-1, 2, self.centre_bins))[last].argmax(-1)
                    truth = (centre[:, -1][last] * self.centre_bins).long().clamp(0, self.centre_bins - 1)
                    out["acc_centre"] = (guess == truth).float().mean()
            else:
                pred = logits["centre"].sigmoid().unflatten(-1, (-1, 2))  # [B, T, C, 2]
                centre_loss = F.l1_loss(pred[mask], centre[mask]) if mask.any() else pred.sum() * 0
                out["centre_l1"] = centre_loss.detach()
            loss = loss + self.box_loss_weight * centre_loss
        with torch.no_grad():
            last_present = (logits["present"][:, -1] > 0).float()
            out["acc_present"] = (last_present == present).all(-1).float().mean()
            out["acc_count"] = (logits["count"][:, -1].argmax(-1) == count).float().mean()
        return loss
