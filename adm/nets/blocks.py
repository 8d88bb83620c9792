"""Building blocks of the ADM UNet (Dhariwal & Nichol 2021, §3 "Architecture improvements").

Module and attribute names (`in_layers`, `emb_layers`, `out_layers`, `skip_connection`, `qkv`,
`proj_out`, ...) are chosen so that `state_dict()` keys equal OpenAI's, which lets the released
checkpoints load unchanged. The networks know nothing of diffusion: t is just a number to embed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from adm.nets.config import GROUPNORM_GROUPS


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (stable in fp16), cast back after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The one normalisation layer ADM uses: 32 groups, affine."""
    return GroupNorm32(GROUPNORM_GROUPS, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so its residual branch starts as the identity (as in DDPM)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (possibly fractional) timesteps: (N,) -> (N, dim).

    Frequencies max_period^(-i/half) for i < half; cos terms first, then sin (OpenAI's order).
    """
    half = dim // 2
    # Same float32 operation order as OpenAI, so the embedding is bit-identical to theirs.
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (N, half)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (N, 2·half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def qkv_attention(qkv: torch.Tensor, num_heads: int, new_order: bool, fused: bool = False) -> torch.Tensor:
    """Multi-head self-attention over T tokens from packed projections: (N, 3·H·C, T) -> (N, H·C, T).

    legacy order: channels are laid out [head][q|k|v][C]; new order: [q|k|v][head][C].
    The scaled_dot_product_attention kernel equals softmax(qᵀk / sqrt(C)) v of OpenAI's einsum.
    """
    n, width, length = qkv.shape
    ch = width // (3 * num_heads)
    if new_order:
        q, k, v = (z.reshape(n * num_heads, ch, length) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(n * num_heads, 3 * ch, length).split(ch, dim=1)  # each (N·H, C, T)
    q, k, v = (z.reshape(n, num_heads, ch, length).transpose(-1, -2) for z in (q, k, v))  # (N, H, T, C)
    if fused:
        # The fused kernels (CPU flash; CUDA flash / mem-efficient) need unit stride in C: on the
        # transposed views above SDPA silently runs its math path (bmm + softmax), 2x slower
        # forward + backward at T = 1024 on CPU. Off by default: it rounds differently (~1e-6).
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())  # (N, H, T, C)
    else:
        # The exact path: SDPA's math path op for op (each of q and kᵀ scaled by sqrt(1/sqrt(C)),
        # as OpenAI scales both by C^(-1/4)), without its _safe_softmax guard for fully masked
        # rows (an all + where over the (T, T) weights that no unmasked attention needs; ~7% of
        # the 64x64 step, bench/out/step_profile.md). The same kernels, so the same bytes.
        s = math.sqrt(1.0 / math.sqrt(ch))
        logits = torch.matmul(q * s, k.transpose(-2, -1) * s)  # (N, H, T, T)
        weights = torch.softmax(logits.float(), dim=-1).to(logits.dtype)  # in float32, as OpenAI's fp16 mode
        out = torch.matmul(weights, v)  # (N, H, T, C)
    return out.transpose(-1, -2).reshape(n, num_heads * ch, length)  # (N, H·C, T)


def heads_for(channels: int, num_heads: int, num_head_channels: int) -> int:
    """Head count: channels // num_head_channels when that is given (>0), else num_heads."""
    if num_head_channels > 0:
        if channels % num_head_channels:
            raise ValueError(f"{channels} attention channels not divisible by num_head_channels {num_head_channels}")
        return channels // num_head_channels
    if num_heads < 1 or channels % num_heads:
        raise ValueError(f"{channels} attention channels not divisible by num_heads {num_heads}")
    return num_heads


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep(+class) embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepSequential(nn.Sequential):
    """nn.Sequential that hands `emb` to the children that want it (keys stay `0`, `1`, ...)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


def _maybe_checkpoint(fn, enabled: bool, *args: torch.Tensor) -> torch.Tensor:
    """torch.utils.checkpoint when enabled and gradients are being recorded, else a plain call."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then an optional 3×3 conv (key `conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class Downsample(nn.Module):
    """A strided 3×3 conv (key `op`) or, without conv, a 2×2 average pool."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the embedding, optionally resampling (BigGAN-style, paper §3).

    With use_scale_shift_norm the embedding enters as adaptive group norm,
    AdaGN(h, y) = y_s · GroupNorm(h) + y_b with y_s = 1 + scale (paper Eq. in §3);
    without it, the projected embedding is simply added to h.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        resample = (lambda: Upsample(channels, False)) if up else (lambda: Downsample(channels, False))
        self.h_upd = resample() if self.updown else nn.Identity()
        self.x_upd = resample() if self.updown else nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        same = out_channels == channels
        self.skip_connection = nn.Identity() if same else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return _maybe_checkpoint(self._forward, self.use_checkpoint, x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W), emb: (N, E)
        if self.updown:  # resample between the activation and the conv, on both branches
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)  # (N, C', H', W')
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (N, C' or 2C', 1, 1)
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift  # AdaGN
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all H·W positions, residual, with a zero-initialised output projection."""

    def __init__(self, channels: int, num_heads: int, new_order: bool = False, use_checkpoint: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.new_order = new_order
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))
        self.fused_attention = False  # see qkv_attention; set by adm.sampling.precision.FastPath

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _maybe_checkpoint(self._forward, self.use_checkpoint, x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, *spatial = x.shape
        x = x.reshape(n, c, -1)  # (N, C, T = H·W)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.new_order, self.fused_attention)  # (N, C, T)
        return (x + self.proj_out(h)).reshape(n, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling: the mean token attends over [mean, H·W tokens] (classifier head).

    Keys: `positional_embedding` (C, HW+1), `qkv_proj`, `c_proj` — as in OpenAI's classifiers.
    """

    def __init__(self, spatial: int, channels: int, head_channels: int, out_channels: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(channels, spatial**2 + 1) / channels**0.5)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)
        self.num_heads = heads_for(channels, 1, head_channels)
        self.fused_attention = False  # see qkv_attention; set by adm.sampling.precision.FastPath

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        x = x.reshape(n, c, -1)  # (N, C, HW)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)  # (N, C, HW+1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = qkv_attention(self.qkv_proj(x), self.num_heads, True, self.fused_attention)  # (N, C, HW+1)
        return self.c_proj(x)[:, :, 0]  # the mean token's output: (N, K)
