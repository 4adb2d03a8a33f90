"""The epsilon predictor eps_theta(x_t, t): a small U-Net (taught in notebook 03, reused in 05 and 07).

Layout, for the default config on 1x28x28 MNIST (B = batch):

    xt (B, 1, 28, 28) --PixelUnshuffle(2)--> (B, 4, 14, 14)      space-to-depth stem: 4x less compute
      conv -> 32 ch at 14x14 -> ResBlock ................................ skip
      downsample -> 14x14 to 7x7 -> ResBlock 64 ch ....................... skip
      middle at 7x7: ResBlock, self-attention, ResBlock
      ResBlock(concat skip) at 7x7 -> upsample -> ResBlock(concat skip) at 14x14
      conv -> (B, 4, 14, 14) --PixelShuffle(2)--> eps_pred (B, 1, 28, 28)

The time step enters through a sinusoidal embedding and an MLP, added to every residual block; a
class label (optional, for classifier-free guidance in notebook 07) adds a learned embedding, with
one extra "no class" entry at index ``num_classes``. A text-conditioned model (``vocabulary`` set,
notebook 07) instead reads prompt tokens with its own text encoder and lets every residual block's
output attend to them (cross-attention, ``text.py``), as Stable Diffusion's U-Net does. The number of levels comes from
``channel_mults``; downsampling rounds up (7 -> 4) and upsampling returns to the skip's exact size,
so odd latent sizes such as 4x7x7 (notebook 05) work too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_lesson.settings import Settings
from diffusion_lesson.text import CrossAttention, TextEncoder, Tokenizer


@dataclass(frozen=True)
class UNetConfig(Settings):
    """Settings that define the network; stored in checkpoints as a plain dict (``to_dict``).

    in_channels: channels of x_t (1 for MNIST, 4 for chapter 05's latents)
    image_size: height = width of x_t
    patch_size: space-to-depth factor of the stem (1 = none); must divide image_size
    base_channels: width of the first level; level i has base_channels * channel_mults[i]
    channel_mults: one entry per resolution level; each level after the first halves the size
    blocks_per_level: residual blocks per level on the way down, and as many again on the way up
    attention: self-attention in the middle, at the lowest resolution
    num_classes: None for an unconditional model; else labels in [0, num_classes), and
        num_classes itself means "no class" (classifier-free guidance)
    norm_groups: groups of each GroupNorm (must divide every level's width)
    vocabulary: None, or the words of a text-conditioned model (its "labels" are then token ids)
    max_tokens, text_dim, text_layers: the prompt length in tokens and the text encoder's size
    """

    in_channels: int = 1
    image_size: int = 28
    patch_size: int = 2
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    blocks_per_level: int = 1
    attention: bool = True
    num_classes: int | None = None
    norm_groups: int = 8
    vocabulary: tuple[str, ...] | None = None
    max_tokens: int = 8
    text_dim: int = 64
    text_layers: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        if self.vocabulary is not None:
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
            if self.num_classes is not None:
                raise ValueError("a U-Net takes class labels (num_classes) or prompts (vocabulary), not both")
        for name in ("in_channels", "image_size", "patch_size", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be a non-empty tuple of ints >= 1, got {self.channel_mults}")
        if self.blocks_per_level < 1:
            raise ValueError(f"blocks_per_level must be >= 1, got {self.blocks_per_level}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1, got {self.num_classes}")
        bad = [c for c in self.widths if c % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups {self.norm_groups} must divide every level's width, not {bad}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels at each level: base_channels * channel_mults[i]."""
        return tuple(self.base_channels * m for m in self.channel_mults)


def null_condition(model: nn.Module, batch: int, device: torch.device | str) -> Tensor:
    """What a conditional U-Net reads as "no condition" (label dropout, guidance): the "no class"
    label, (B,) filled with num_classes, or the empty prompt's tokens, (B, max_tokens)."""
    cfg = model.config
    if cfg.vocabulary is not None:
        return Tokenizer(cfg.vocabulary, cfg.max_tokens).encode([""] * batch).to(device)
    if cfg.num_classes is None:
        raise ValueError("guidance (and label dropout) needs a conditional model (a class-conditional or "
                         "text-conditioned U-Net)")  # fmt: skip
    return torch.full((batch,), cfg.num_classes, dtype=torch.long, device=device)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of the step t (Transformer positions, as in DDPM): (B,) -> (B, dim).

    Frequencies run geometrically from 1 to 1/max_period; the first half is cos, the second sin.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, dim % 2))  # odd dim: one zero column


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added per channel in between; residual skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable at high LR
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (B, in_ch, H, W), emb: (B, emb_dim) -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, residual (cheap at 7x7: 49 tokens)."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)  # (B, HW, C) each
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        return x + self.out(h.transpose(1, 2).reshape(B, C, H, W))


class UNet(nn.Module):
    """eps_theta(x_t, t[, label]): predicts the noise in x_t, same shape as x_t."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UNetConfig()
        widths, groups, p = cfg.widths, cfg.norm_groups, cfg.patch_size
        emb_dim = 4 * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # index num_classes is the "no class" entry, used when a label is dropped (guidance)
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes is not None else None
        self.stem = nn.Conv2d(cfg.in_channels * p * p, widths[0], 3, padding=1)
        self.text_encoder = None
        if cfg.vocabulary is not None:
            self.text_encoder = TextEncoder(len(cfg.vocabulary), cfg.max_tokens, cfg.text_dim, cfg.text_layers)
            self.tokenizer = Tokenizer(cfg.vocabulary, cfg.max_tokens)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch, skip_chs = widths[0], []
        for i, width in enumerate(widths):
            for _ in range(cfg.blocks_per_level):
                self.down.append(ResBlock(ch, width, emb_dim, groups))
                ch = width
                skip_chs.append(ch)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))

        self.mid1 = ResBlock(ch, ch, emb_dim, groups)
        self.attn = SelfAttention(ch, groups) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim, groups)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            for _ in range(cfg.blocks_per_level):
                self.up.append(ResBlock(ch + skip_chs.pop(), width, emb_dim, groups))
                ch = width
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, widths[i - 1], 3, padding=1))
                ch = widths[i - 1]

        self.cross = None  # a text model: cross-attention after every residual block (down, middle, up)
        if self.text_encoder is not None:
            widths_out = [b.conv2.out_channels for b in (*self.down, self.mid2, *self.up)]
            self.cross = nn.ModuleList(CrossAttention(c, cfg.text_dim, groups) for c in widths_out)
        self.out_norm = nn.GroupNorm(groups, ch)
        self.out_conv = nn.Conv2d(ch, cfg.in_channels * p * p, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, xt: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """xt: (B, C, H, W) as in the config; t: (B,) long in [0, T); labels: (B,) long or None.

        A text-conditioned model takes token ids (B, max_tokens) as labels (``self.tokenizer``).
        Returns eps_pred: (B, C, H, W). labels=None means "no class" (or the empty prompt).
        """
        self._check_inputs(xt, t, labels)
        cfg, B = self.config, xt.shape[0]
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels))  # (B, emb_dim)
        if labels is None and (cfg.num_classes is not None or cfg.vocabulary is not None):
            labels = null_condition(self, B, xt.device)
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)
        attend = self._cross_attention(labels)

        h = self.stem(F.pixel_unshuffle(xt, cfg.patch_size))  # (B, widths[0], H/p, W/p)
        skips, blocks = [], iter(self.down)
        for i in range(len(cfg.widths)):
            for _ in range(cfg.blocks_per_level):
                h = attend(next(blocks)(h, emb))
                skips.append(h)
            if i < len(cfg.widths) - 1:
                h = self.downsample[i](h)  # (B, C, ceil(H/2), ceil(W/2))

        h = attend(self.mid2(self.attn(self.mid1(h, emb)), emb))

        blocks, upsamples = iter(self.up), iter(self.upsample)
        for i in reversed(range(len(cfg.widths))):
            for _ in range(cfg.blocks_per_level):
                h = attend(next(blocks)(self.merge_skip(h, skips.pop()), emb))
            if i > 0:
                size = skips[-1].shape[-2:]  # back to the skip's exact size (odd sizes: 4 -> 7)
                h = next(upsamples)(F.interpolate(h, size=size, mode="nearest"))

        h = self.out_conv(F.silu(self.out_norm(h)))  # (B, C * p * p, H/p, W/p)
        return F.pixel_shuffle(h, cfg.patch_size)

    def _cross_attention(self, tokens: Tensor | None):
        """h -> h for an untexted model; else h -> the next cross-attention block applied to h."""
        if self.text_encoder is None:
            return lambda h: h
        context, pad = self.text_encoder(tokens)  # (B, L, text_dim), (B, L)
        blocks = iter(self.cross)
        return lambda h: next(blocks)(h, context, pad)

    def merge_skip(self, h: Tensor, skip: Tensor) -> Tensor:
        """How the way up takes in a skip connection: concatenated channels, (B, C_h + C_skip, H, W)."""
        return torch.cat([h, skip], dim=1)

    def _check_inputs(self, xt: Tensor, t: Tensor, labels: Tensor | None) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if xt.ndim != 4 or tuple(xt.shape[1:]) != expected:
            raise ValueError(
                f"xt must have shape (B, {', '.join(map(str, expected))}) for this UNetConfig, got {tuple(xt.shape)}"
            )
        if not isinstance(t, Tensor) or t.shape != (xt.shape[0],) or t.dtype.is_floating_point:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a (B,) = ({xt.shape[0]},) integer tensor, got {got}")
        if labels is None:
            return
        if cfg.vocabulary is not None:
            if labels.shape != (xt.shape[0], cfg.max_tokens) or labels.dtype != torch.long:
                raise ValueError(f"a text-conditioned U-Net takes token ids ({xt.shape[0]}, {cfg.max_tokens}) long "
                                 f"(model.tokenizer.encode), got {tuple(labels.shape)} {labels.dtype}")  # fmt: skip
            return
        if cfg.num_classes is None:
            raise ValueError("labels were given to an unconditional model (UNetConfig.num_classes is None)")
        if labels.shape != (xt.shape[0],) or labels.dtype != torch.long:
            raise ValueError(f"labels must be a ({xt.shape[0]},) long tensor, got {tuple(labels.shape)} {labels.dtype}")
        # Values are checked on the CPU only: on a GPU reading them back would stall every sampling step
        # (tests/test_device_paths.py); the commands check digits before they reach the device.
        if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() > cfg.num_classes):
            raise ValueError(
                f"labels must lie in [0, {cfg.num_classes}] ({cfg.num_classes} = no class), "
                f"got values from {labels.min().item()} to {labels.max().item()}"
            )
