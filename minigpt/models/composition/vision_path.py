"""The image path of a multimodal LLM: vision encoder -> projector, videos frame by frame through it, and the
vision feature cache's split points."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

VIDEO_POOLINGS = ("mean", "concat")  # model.video_pooling: how a video's frames fill its one slot


def _stochastic(module: nn.Module) -> bool:
    """Whether ``module`` gives different outputs for the same input in its current mode (active dropout or batch stats)."""
    for m in module.modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return True
        if type(m).__name__ == "DropPath" and float(getattr(m, "drop_prob", 0.0) or 0.0) > 0:
            return True
    return False


class VisionPathMixin:
    """``vision_encoder`` and ``projector`` of a :class:`~minigpt.models.composition.mllm.MultimodalLLM`."""

    vision_encoder: nn.Module
    projector: nn.Module
    freeze_vision: bool
    video_pooling: str

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, N, llm_hidden]`` image embeddings.

        A 3-D ``images`` is not pixels but what :meth:`vision_prefix` returned for them (the vision
        feature cache hands those in, see ``minigpt/runners/vision_cache.py``): only the rest of the
        image path, :meth:`vision_suffix`, runs on it.
        """
        if images.dim() == 3 and not getattr(self.vision_encoder, "takes_features", False):
            return self.vision_suffix(images)
        if self.freeze_vision:
            with torch.no_grad():
                feats = self.vision_encoder(images)
        else:
            feats = self.vision_encoder(images)
        return self.projector(feats)

    def num_image_tokens(self) -> int:
        return self.projector.num_output_tokens(self.vision_encoder.num_tokens)

    def num_video_tokens(self, n_frames: int) -> int:
        """The embeddings a video of ``n_frames`` frames fills its slot with (``model.video_pooling``)."""
        n = self.num_image_tokens()
        return n if self.video_pooling == "mean" else n * int(n_frames)

    def pool_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``[V, T, N, D]`` per-frame embeddings -> ``[V, N, D]`` (``mean``) or ``[V, T*N, D]`` (``concat``, frame by frame)."""
        if self.video_pooling == "mean":
            return frames.mean(1)
        return frames.flatten(1, 2)

    def encode_media_items(
        self, images: Optional[torch.Tensor], videos: Optional[torch.Tensor]
    ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(images [M, 3, H, W], videos [V, T, 3, H, W])`` -> ``([M, N, D], [V, N or T*N, D])`` (None stays None).

        Each frame of a video goes through the image path as an image does, then
        :meth:`pool_frames` joins a video's frames. Frames and images of one size share one pass
        through the encoder. Videos given as features (a ``precomputed`` encoder: ``[V, N, C]``) take
        the image path as they are, as one item each.
        """
        if videos is None or videos.dim() != 5:
            vid = None if videos is None else self.encode_images(videos)
            return (None if images is None else self.encode_images(images)), vid
        v, t = videos.shape[:2]
        frames = videos.flatten(0, 1)  # [V*T, 3, H, W]
        if images is not None and images.shape[1:] == frames.shape[1:]:
            both = self.encode_images(torch.cat([images, frames]))
            img, per_frame = both[: images.shape[0]], both[images.shape[0]:]
        else:
            img = None if images is None else self.encode_images(images)
            per_frame = self.encode_images(frames)
        return img, self.pool_frames(per_frame.unflatten(0, (v, t)))  # [V, T, N, D] pooled

    # the parts of the image path whose output the vision feature cache may store, deepest first
    VISION_CACHE_POINTS = ("projector", "projector_prefix", "vision_encoder")

    def vision_cache_point(self) -> Optional[str]:
        """Where the frozen, deterministic start of the image path ends in training, or None when the encoder trains.

        ``"projector"``: the encoder and the whole projector are frozen and deterministic (no active
        dropout or batch statistics) in training mode; ``"projector_prefix"``: the projector's leading
        part is (a frozen Q-Former, through the projector's ``has_frozen_prefix()``); ``"vision_encoder"``:
        only the encoder is. Judged on the modules' current train/eval modes and ``requires_grad`` flags.
        """
        if not self.freeze_vision or any(p.requires_grad for p in self.vision_encoder.parameters()):
            return None
        if _stochastic(self.vision_encoder):
            return None
        proj = self.projector
        if not any(p.requires_grad for p in proj.parameters()) and not _stochastic(proj):
            return "projector"
        if callable(getattr(proj, "has_frozen_prefix", None)) and proj.has_frozen_prefix():
            return "projector_prefix"
        return "vision_encoder"

    @torch.no_grad()
    def vision_prefix(self, images: torch.Tensor, point: Optional[str] = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the output of the image path's frozen start up to ``point`` (3-D).

        ``point`` defaults to ``vision_feature_point`` (set by the vision feature cache). Computed as
        :meth:`encode_images` computes it, so ``encode_images(vision_prefix(x))`` is ``encode_images(x)``.
        """
        point = self._feature_point(point)
        feats = self.vision_encoder(images)
        if point == "projector_prefix":
            return self.projector.frozen_prefix(feats)
        if point == "projector":
            return self.projector(feats)
        return feats

    def vision_suffix(self, feats: torch.Tensor, point: Optional[str] = None) -> torch.Tensor:
        """The rest of the image path after :meth:`vision_prefix`: ``[B, N', C']`` -> ``[B, N, llm_hidden]``."""
        point = self._feature_point(point)
        if point == "projector_prefix":
            return self.projector.trainable_suffix(feats)
        if point == "projector":
            return feats
        return self.projector(feats)

    def _feature_point(self, point: Optional[str]) -> str:
        point = point or getattr(self, "vision_feature_point", None)
        if point not in self.VISION_CACHE_POINTS:
            raise ValueError(
                f"image features need a cache point ({', '.join(self.VISION_CACHE_POINTS)}), got {point!r}: "
                "3-D images are cached vision features, which only a vision feature cache set up on this model "
                "hands in (run.vision_feature_cache)"
            )
        return point

