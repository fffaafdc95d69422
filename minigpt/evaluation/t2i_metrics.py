"""Text-to-image metrics: FID against a precomputed statistics file, and CLIP score.

**FID** is the Fréchet distance between two Gaussians fitted to image features: the generated
images' and a reference set's, the latter given as a statistics file (``.npz`` with ``mu`` [D] and
``sigma`` [D, D], the layout clean-fid and pytorch-fid save), so the reference images need not be
at hand. Which features: ``--features``:

* ``torchscript:PATH`` — a TorchScript Inception feature network read from a local file, called
  as ``net(uint8 images [N, 3, H, W], return_features=True)`` -> ``[N, 2048]`` (the
  ``inception-2015-12-05.pt`` file of the StyleGAN/clean-fid tooling). Nothing is downloaded: the
  file must be on disk. Only these features give FIDs comparable with published ones, and only
  against statistics made with the same file.
* ``random:DIM[:SEED]`` — a small randomly initialised convolutional network (seeded) with ``DIM``
  features: no weights needed, so the pipeline runs anywhere (tests, the synthetic world); its
  figures compare runs with each other, never with published FIDs.

**CLIP score** is ``100 * max(cos(image embedding, text embedding), 0)`` averaged over the pairs
(the definition of Hessel et al. and torchmetrics), with any CLIP-like pair of encoders that
transformers loads with ``AutoModel`` + ``AutoProcessor`` from a local folder and that has
``get_image_features`` / ``get_text_features`` (CLIP, SigLIP, ...).
"""

from __future__ import annotations

import os
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

FeatureFn = Callable[[List[Image.Image]], np.ndarray]


class MetricInputError(ValueError):
    """A statistics file, feature spec or encoder folder that cannot be used; the message names it."""


# -- FID ----------------------------------------------------------------------------------------------------
def feature_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` of features ``[N, D]`` (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise MetricInputError(f"FID needs at least two feature rows [N, D], got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, the Fréchet distance of two Gaussians."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise MetricInputError(
            f"FID: the two feature statistics differ in size ({mu1.shape[0]} vs {mu2.shape[0]} features): "
            "were they made with the same feature network?"
        )
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():  # a near-singular product: nudge both diagonals, as the reference code does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def save_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """``mu`` and ``sigma`` to an ``.npz`` file (the clean-fid / pytorch-fid layout), written atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, path)


def load_stats(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a statistics file; a missing file or key, or mismatched shapes, is an error naming it."""
    if not os.path.isfile(path):
        raise MetricInputError(f"FID reference statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("mu", "sigma") if k not in data.files]
            if missing:
                raise MetricInputError(
                    f"FID statistics file {path} lacks {', '.join(missing)} (holds {', '.join(data.files) or 'nothing'})"
                )
            mu, sigma = np.asarray(data["mu"]), np.asarray(data["sigma"])
    except (OSError, ValueError) as exc:
        if isinstance(exc, MetricInputError):
            raise
        raise MetricInputError(f"FID statistics file {path} is not a readable .npz: {exc}") from exc
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise MetricInputError(f"FID statistics file {path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D]")
    return mu, sigma


# -- feature networks ---------------------------------------------------------------------------------------
class RandomConvFeatures(nn.Module):
    """A seeded, randomly initialised conv net: ``[N, 3, 64, 64]`` in [0, 1] -> ``[N, dim]``. For tests and offline runs."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, int(dim)),
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _as_uint8(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """``[N, 3, size, size]`` uint8 (bicubic resize)."""
    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def build_features(spec: str, device: str = "cpu") -> FeatureFn:
    """The feature function ``--features`` names: ``torchscript:PATH`` or ``random:DIM[:SEED]`` (see the module notes)."""
    kind, _, rest = str(spec).partition(":")
    if kind == "torchscript":
        if not os.path.isfile(rest):
            raise MetricInputError(
                f"--features {spec!r}: no file at {rest!r}; FID needs the Inception TorchScript file on disk "
                "(nothing is downloaded), or random:DIM for figures that only compare runs"
            )
        net = torch.jit.load(rest, map_location=device).eval()

        @torch.no_grad()
        def inception(images: List[Image.Image]) -> np.ndarray:
            x = _as_uint8(images, 299).to(device)
            return net(x, return_features=True).float().cpu().numpy()

        return inception
    if kind == "random":
        parts = rest.split(":")
        try:
            dim, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise MetricInputError(f"--features {spec!r}: expected random:DIM or random:DIM:SEED, e.g. random:64") from None
        if dim < 1:
            raise MetricInputError(f"--features {spec!r}: DIM must be >= 1")
        net = RandomConvFeatures(dim, seed).to(device).eval()

        @torch.no_grad()
        def random_features(images: List[Image.Image]) -> np.ndarray:
            x = _as_uint8(images, 64).to(device).float() / 255.0
            return net(x).cpu().numpy()

        return random_features
    raise MetricInputError(f"--features {spec!r}: expected torchscript:PATH or random:DIM[:SEED]")


def features_of(images: Sequence[Image.Image], features: FeatureFn, batch_size: int = 32) -> np.ndarray:
    """Features ``[N, D]`` of ``images``, ``batch_size`` at a time."""
    out = [features(list(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(out, 0) if out else np.zeros((0, 0))


# -- CLIP score ---------------------------------------------------------------------------------------------
class ClipScorer:
    """CLIP score with a local CLIP-like model folder (``AutoModel`` + ``AutoProcessor``)."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoProcessor

        if not os.path.isdir(path):
            raise MetricInputError(f"--clip-model {path!r}: not a folder (a CLIP-like model saved with save_pretrained)")
        try:
            self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise MetricInputError(f"--clip-model {path!r}: cannot load a model and processor: {exc}") from exc
        for method in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, method):
                raise MetricInputError(f"--clip-model {path!r}: {type(self.model).__name__} has no {method}")
        self.device = device

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        # transformers 5 may return a model output whose pooled embedding is the features
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> List[float]:
        """``100 * max(cos, 0)`` of each (image, text) pair."""
        if len(images) != len(texts):
            raise ValueError(f"CLIP score: {len(images)} images but {len(texts)} texts")
        if not images:
            return []
        inputs = self.processor(text=list(texts), images=[im.convert("RGB") for im in images], return_tensors="pt",
                                padding=True, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        img = self._tensor(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        text_keys = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        txt = self._tensor(self.model.get_text_features(**text_keys))
        cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
        return (100.0 * cos.clamp(min=0)).tolist()
