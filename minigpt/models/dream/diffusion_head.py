"""DreamLLM's diffusion head: learned dream queries whose last-layer states condition a diffusers UNet.

The head owns what image creation adds to an LLM: the ``num_queries`` learned dream queries (the
model puts them after each ``<dream_start>``; see :mod:`minigpt.models.dream.model`), the linear
condition projector from the LLM width to the UNet's cross-attention width, diffusers'
``UNet2DConditionModel``, an optional ``AutoencoderKL`` (``vae: null`` diffuses in pixel space) and a
noise scheduler. Training loss: epsilon prediction on the noised latents of the target images (or
velocity prediction, when the scheduler's ``prediction_type`` says ``v_prediction``), with
three explicit options, all off by default: min-SNR-gamma weighting (``snr_gamma``), noise offset
(``noise_offset``) and condition dropout for classifier-free guidance (``cfg_dropout``: the condition
is zeroed, which is also the unconditional input at sampling). The UNet and VAE are frozen unless
their block says ``freeze: false``; gradients still flow through the frozen UNet to the queries, the
projector and the LLM.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from minigpt.models.base_model import building_on_meta
from minigpt.models.composition.heads import OutputHead

logger = logging.getLogger(__name__)

PART_KEYS = ("pretrained", "subfolder", "config", "freeze")
SCHEDULER_KEYS = ("pretrained", "subfolder", "config")
# epsilon: the UNet predicts the noise (DreamLLM's SD 2.1-base); v_prediction: the velocity
# sqrt(a) * noise - sqrt(1 - a) * x0 (SD 2.1 at 768 px), whose high-noise target is the image itself
PREDICTION_TYPES = ("epsilon", "v_prediction")


def _part_block(block: Optional[Dict[str, Any]], where: str, keys=PART_KEYS) -> Dict[str, Any]:
    block = dict(block or {})
    unknown = sorted(set(block) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; accepted keys: {', '.join(keys)}")
    return block


def _build_diffusers_part(cls: Any, block: Dict[str, Any], where: str) -> nn.Module:
    """``cls`` from ``pretrained`` (a local diffusers folder, read at ``subfolder``) or from the ``config`` block.

    On the meta device a missing ``pretrained`` folder falls back to ``config`` (shapes only)."""
    path = block.get("pretrained")
    if path and os.path.isdir(path):
        if building_on_meta():
            return cls.from_config(cls.load_config(path, subfolder=block.get("subfolder")))
        return cls.from_pretrained(path, subfolder=block.get("subfolder"))
    if path and not building_on_meta():
        raise FileNotFoundError(f"{where}.pretrained: directory not found: {path}")
    if not block.get("config"):
        raise ValueError(f"{where}: needs `pretrained` (a diffusers folder) or a `config` block")
    return cls.from_config(dict(block["config"]))


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


class DreamDiffusionHead(OutputHead):
    """Dream queries + condition projector + diffusers UNet (and VAE, scheduler). YAML name ``dream_diffusion``.

    ``resolution``: the side of the images the UNet draws, in pixels (target images are resized to it);
    ``guidance_scale`` and ``sampling_steps`` are the sampling defaults (DDIM).
    """

    def __init__(
        self,
        hidden_size: int,
        weight: float = 1.0,
        scale: str = "items",
        num_queries: int = 64,
        resolution: int = 512,
        unet: Optional[Dict[str, Any]] = None,
        vae: Optional[Dict[str, Any]] = None,
        scheduler: Optional[Dict[str, Any]] = None,
        snr_gamma: Optional[float] = None,
        noise_offset: float = 0.0,
        cfg_dropout: float = 0.0,
        guidance_scale: float = 1.0,
        sampling_steps: int = 50,
        coord_channels: bool = False,
        condition_norm: bool = False,
    ) -> None:
        super().__init__(hidden_size, weight, scale)
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        if num_queries < 1:
            raise ValueError(f"heads.dream_diffusion.num_queries must be >= 1, got {num_queries}")
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"heads.dream_diffusion.cfg_dropout must be in [0, 1), got {cfg_dropout}")
        if snr_gamma is not None and snr_gamma <= 0:
            raise ValueError(f"heads.dream_diffusion.snr_gamma must be > 0 or null, got {snr_gamma}")
        self.num_queries = int(num_queries)
        self.resolution = int(resolution)
        self.snr_gamma = None if snr_gamma is None else float(snr_gamma)
        self.noise_offset = float(noise_offset)
        self.cfg_dropout = float(cfg_dropout)
        self.guidance_scale = float(guidance_scale)
        self.sampling_steps = int(sampling_steps)
        # two extra UNet input channels holding each position's x and y in [-1, 1]: a small conv net can
        # then tell where "top left" is (its padding alone says so weakly); off for Stable Diffusion's UNet
        self.coord_channels = bool(coord_channels)
        # [Q, D]: at the LLM's embedding scale, like token embeddings
        self.queries = nn.Parameter(torch.randn(self.num_queries, hidden_size) * hidden_size**-0.5)
        unet_block = _part_block(unet, "heads.dream_diffusion.unet")
        config = dict(unet_block.get("config") or {})
        if config.get("class_embed_type") == "projection" and not config.get("projection_class_embeddings_input_dim"):
            # the mean condition is what joins the time embedding: its width is the cross-attention's
            config["projection_class_embeddings_input_dim"] = config.get("cross_attention_dim")
            unet_block["config"] = config
        self.unet = _build_diffusers_part(UNet2DConditionModel, unet_block, "heads.dream_diffusion.unet")
        self.freeze_unet = bool(unet_block.get("freeze", True))
        if self.freeze_unet:
            _freeze(self.unet)
        self.vae: Optional[nn.Module] = None
        self.freeze_vae = True
        if vae is not None:
            vae_block = _part_block(vae, "heads.dream_diffusion.vae")
            self.vae = _build_diffusers_part(AutoencoderKL, vae_block, "heads.dream_diffusion.vae")
            self.freeze_vae = bool(vae_block.get("freeze", True))
            if self.freeze_vae:
                _freeze(self.vae)
        cross_dim = self.unet.config.cross_attention_dim
        self.condition_projector = nn.Linear(hidden_size, int(cross_dim))
        # each (query, feature) of the states standardised over the batch (running statistics at sampling):
        # removes each query's constant part, which in a small LLM's states dwarfs what the request says
        self.condition_norm = (
            nn.BatchNorm1d(self.num_queries * hidden_size) if condition_norm else None
        )
        sched_block = _part_block(scheduler, "heads.dream_diffusion.scheduler", SCHEDULER_KEYS)
        path = sched_block.get("pretrained")
        if path and os.path.isdir(path):
            self.noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder=sched_block.get("subfolder"))
        else:
            self.noise_scheduler = DDPMScheduler(**dict(sched_block.get("config") or {}))
        self.prediction_type = str(self.noise_scheduler.config.prediction_type)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"heads.dream_diffusion.scheduler: prediction_type must be one of {', '.join(PREDICTION_TYPES)} "
                f"(what the UNet predicts: the noise, or the velocity), got {self.prediction_type!r}"
            )
        latent_channels = self.vae.config.latent_channels if self.vae is not None else 3
        self.latent_channels = int(latent_channels)
        wanted = latent_channels + (2 if self.coord_channels else 0)
        if self.unet.config.in_channels != wanted or self.unet.config.out_channels != latent_channels:
            raise ValueError(
                f"heads.dream_diffusion.unet: in_channels/out_channels are {self.unet.config.in_channels}/"
                f"{self.unet.config.out_channels} but the {'VAE latents' if self.vae is not None else 'pixel-space images'}"
                f" have {latent_channels} channels" + (" (+2 coordinate channels in)" if self.coord_channels else "")
            )

    def train(self, mode: bool = True) -> "DreamDiffusionHead":
        super().train(mode)
        if self.freeze_unet:
            self.unet.eval()
        if self.vae is not None and self.freeze_vae:
            self.vae.eval()
        return self

    # -- latents -------------------------------------------------------------------------------
    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``[N, 3, H, W]`` in [-1, 1] -> what the UNet denoises (VAE latents, or the pixels)."""
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="area")
        if self.vae is None:
            return images
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_vae):
            dist = self.vae.encode(images.to(next(self.vae.parameters()).dtype)).latent_dist
            return dist.sample() * self.vae.config.scaling_factor

    def from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Denoised latents -> images ``[N, 3, H, W]`` in [0, 1]."""
        if self.vae is not None:
            latents = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return ((latents.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def unet_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, C, h, w]``, with the coordinate channels appended when ``coord_channels`` is on."""
        if not self.coord_channels:
            return x
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([x, xs, ys], dim=1)

    def run_unet(self, x: torch.Tensor, t: Any, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction for ``x`` at ``t`` given ``cond`` ``[N, Q, C]``: through cross-attention, and,
        when the UNet has a projection class embedding (``class_embed_type: projection``), also as the mean
        condition added to its time embedding (a global path every block sees)."""
        extra = {}
        if self.unet.config.class_embed_type is not None:
            extra["class_labels"] = cond.mean(dim=1)
        return self.unet(self.unet_input(x), t, encoder_hidden_states=cond, **extra).sample

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        """The dream queries' last-layer states ``[N, Q, D]`` -> the UNet's cross-attention input ``[N, Q, C]``."""
        states = states.to(self.condition_projector.weight.dtype)
        if self.condition_norm is not None:
            n, q, d = states.shape
            norm = self.condition_norm
            # one dream in a training batch has no spread to standardise by: the running statistics then
            batch_stats = self.training and n > 1
            flat = F.batch_norm(states.reshape(n, q * d), norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                batch_stats, norm.momentum, norm.eps)
            states = flat.view(n, q, d)
        return self.condition_projector(states)

    # -- training --------------------------------------------------------------------------------
    def count_items(self, batch: Dict[str, torch.Tensor], samples: Dict[str, Any]) -> int:
        mask = batch.get("dream_mask")
        return 0 if mask is None else int(mask.sum()) // self.num_queries

    def loss(self, hidden: torch.Tensor, batch: Dict[str, torch.Tensor], samples: Dict[str, Any]) -> Optional[torch.Tensor]:
        mask = batch.get("dream_mask")
        if mask is None or not bool(mask.any()):
            return None
        targets = dream_targets(samples, batch, self.num_queries)
        states = hidden[mask].view(-1, self.num_queries, hidden.shape[-1])  # [N, Q, D], dreams in reading order
        return self.diffusion_loss(self.condition(states), targets.to(states.device))

    def diffusion_loss(self, cond: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Epsilon-prediction loss of the UNet conditioned on ``cond`` ``[N, Q, C]`` for ``images`` ``[N, 3, H, W]``."""
        x0 = self.to_latents(images.float()).detach()
        noise = torch.randn_like(x0)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn(x0.shape[0], x0.shape[1], 1, 1, device=x0.device)
        steps = int(self.noise_scheduler.config.num_train_timesteps)
        t = torch.randint(0, steps, (x0.shape[0],), device=x0.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        if self.training and self.cfg_dropout > 0:
            keep = (torch.rand(cond.shape[0], device=cond.device) >= self.cfg_dropout).to(cond.dtype)
            cond = cond * keep[:, None, None]
        pred = self.run_unet(noisy.to(cond.dtype), t, cond)
        target = noise if self.prediction_type == "epsilon" else self.noise_scheduler.get_velocity(x0, noise, t)
        per_item = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # [N]
        if self.snr_gamma is not None:
            alphas = self.noise_scheduler.alphas_cumprod.to(x0.device)[t]
            snr = alphas / (1.0 - alphas)
            # min-SNR-gamma: x0-space weight min(snr, gamma), over snr for epsilon and snr + 1 for velocity
            per_item = per_item * torch.clamp(snr, max=self.snr_gamma) / (snr if self.prediction_type == "epsilon" else snr + 1.0)
        return per_item.mean()

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        states: torch.Tensor,
        guidance_scale: Optional[float] = None,
        steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [0, 1] drawn for the dream queries' states ``[N, Q, D]`` (DDIM).

        ``guidance_scale`` > 1 mixes the conditional and the unconditional (zeroed condition)
        predictions as classifier-free guidance; 1 runs the conditional one alone.
        """
        from diffusers import DDIMScheduler

        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        sampler = DDIMScheduler.from_config(self.noise_scheduler.config)
        sampler.set_timesteps(int(steps or self.sampling_steps), device=states.device)
        cond = self.condition(states)
        n = cond.shape[0]
        channels = self.latent_channels
        side = self.resolution // (2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1)
        x = torch.randn(n, channels, side, side, generator=generator, device="cpu").to(states.device, cond.dtype)
        both = torch.cat([cond, torch.zeros_like(cond)]) if scale != 1.0 else cond
        for t in sampler.timesteps:
            inp = torch.cat([x, x]) if scale != 1.0 else x
            eps = self.run_unet(inp, t, both)
            if scale != 1.0:
                eps_c, eps_u = eps.chunk(2)
                eps = eps_u + scale * (eps_c - eps_u)
            x = sampler.step(eps, t, x).prev_sample
        return self.from_latents(x)


def dream_targets(samples: Dict[str, Any], batch: Dict[str, torch.Tensor], num_queries: int) -> torch.Tensor:
    """The target images ``[N, 3, H, W]`` of the batch's dreams, in reading order (sample by sample).

    ``samples["target_image"]`` holds, per sample, one image tensor, a list of them, or None; each
    sample must carry as many target images as its answer has ``<dream>`` tokens.
    """
    per_sample = (batch["dream_mask"].sum(dim=1) // num_queries).tolist()
    column = samples.get("target_image")
    if isinstance(column, torch.Tensor):
        column = list(column)
    column = list(column) if column is not None else [None] * len(per_sample)
    ids = samples.get("sample_id") or [f"#{i}" for i in range(len(per_sample))]
    out: List[torch.Tensor] = []
    for i, n in enumerate(per_sample):
        items = column[i]
        items = [] if items is None else list(items) if isinstance(items, (list, tuple)) else [items]
        if len(items) != n:
            raise ValueError(
                f"sample {ids[i]}: its answer asks for {n} image(s) (<dream>) but it carries {len(items)} "
                "target_image(s)"
            )
        out.extend(items)
    return torch.stack(out)
