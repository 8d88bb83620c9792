"""The ADM UNet (Dhariwal & Nichol 2021, §3) and its super-resolution variant.

`UNet(cfg)(x_t, t, y)` returns the raw network output (eps, and v when learn_sigma) for the
ORIGINAL timestep t; mapping a respaced step index to t is the sampler's job, not the network's.
State-dict keys and shapes equal OpenAI's `UNetModel` / `SuperResModel`, so released checkpoints
load directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adm.nets import fp16
from adm.nets.blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimestepSequential,
    Upsample,
    heads_for,
    normalization,
    timestep_embedding,
    zero_module,
)
from adm.nets.config import UNetConfig


@dataclass(frozen=True)
class EncoderSpec:
    """What the down path and middle block need, shared by the UNet and the classifier."""

    image_size: int  # H = W of the input, pixels
    in_channels: int  # channels fed to the first conv
    model_channels: int  # base width; the embedding is 4× this
    num_res_blocks: int  # ResBlocks per level
    attention_resolutions: tuple[int, ...]  # feature-map sizes that get self-attention
    channel_mult: tuple[float, ...]  # width multiplier per level
    dropout: float  # ResBlock dropout
    num_heads: int  # heads when num_head_channels <= 0
    num_head_channels: int  # >0: channels per head
    use_scale_shift_norm: bool  # AdaGN
    resblock_updown: bool  # ResBlock (True) or strided conv (False) downsampling
    new_attention_order: bool  # q,k,v split before heads
    use_checkpoint: bool  # gradient checkpointing in every block

    @property
    def emb_channels(self) -> int:
        return 4 * self.model_channels

    def width(self, level: int) -> int:
        return int(self.channel_mult[level] * self.model_channels)

    def attention(self, channels: int, num_heads: int | None = None) -> AttentionBlock:
        heads = heads_for(channels, num_heads or self.num_heads, self.num_head_channels)
        return AttentionBlock(channels, heads, self.new_attention_order, self.use_checkpoint)

    def resblock(self, channels: int, out_channels: int | None = None, **updown: bool) -> ResBlock:
        return ResBlock(
            channels,
            self.emb_channels,
            self.dropout,
            out_channels,
            self.use_scale_shift_norm,
            use_checkpoint=self.use_checkpoint,
            **updown,
        )


def time_embed_mlp(model_channels: int) -> nn.Sequential:
    """sinusoid(t) -> Linear -> SiLU -> Linear, keys time_embed.0 / time_embed.2."""
    emb = 4 * model_channels
    return nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))


def build_encoder(spec: EncoderSpec) -> tuple[nn.ModuleList, TimestepSequential, list[int], int]:
    """Down path + middle block. Returns (input_blocks, middle_block, skip widths, final map size)."""
    ch = spec.width(0)
    blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(spec.in_channels, ch, 3, padding=1))])
    skips, res = [ch], spec.image_size
    for level in range(len(spec.channel_mult)):
        for _ in range(spec.num_res_blocks):
            layers: list[nn.Module] = [spec.resblock(ch, spec.width(level))]
            ch = spec.width(level)
            if res in spec.attention_resolutions:
                layers.append(spec.attention(ch))
            blocks.append(TimestepSequential(*layers))
            skips.append(ch)
        if level != len(spec.channel_mult) - 1:  # halve the map between levels
            down = spec.resblock(ch, down=True) if spec.resblock_updown else Downsample(ch, True)
            blocks.append(TimestepSequential(down))
            skips.append(ch)
            res //= 2
    middle = TimestepSequential(spec.resblock(ch), spec.attention(ch), spec.resblock(ch))
    return blocks, middle, skips, res


def build_decoder(spec: EncoderSpec, skips: list[int], res: int, heads_up: int) -> nn.ModuleList:
    """Up path: num_res_blocks + 1 blocks per level, each eating one skip connection."""
    skips = list(skips)
    ch = spec.width(len(spec.channel_mult) - 1)
    blocks = nn.ModuleList()
    for level in reversed(range(len(spec.channel_mult))):
        for i in range(spec.num_res_blocks + 1):
            layers: list[nn.Module] = [spec.resblock(ch + skips.pop(), spec.width(level))]
            ch = spec.width(level)
            if res in spec.attention_resolutions:
                layers.append(spec.attention(ch, heads_up))
            if level and i == spec.num_res_blocks:  # double the map between levels
                layers.append(spec.resblock(ch, up=True) if spec.resblock_updown else Upsample(ch, True))
                res *= 2
            blocks.append(TimestepSequential(*layers))
    return blocks


def unet_spec(cfg: UNetConfig) -> EncoderSpec:
    return EncoderSpec(
        cfg.image_size,
        cfg.in_channels,
        cfg.model_channels,
        cfg.num_res_blocks,
        cfg.attention_resolutions,
        cfg.channel_mult,
        cfg.dropout,
        cfg.num_heads,
        cfg.num_head_channels,
        cfg.use_scale_shift_norm,
        cfg.resblock_updown,
        cfg.use_new_attention_order,
        cfg.use_checkpoint,
    )


def check_image(x: torch.Tensor, channels: int, size: int, name: str = "x") -> None:
    """One clear ValueError when x is not (N, channels, size, size) floating point."""
    if x.ndim != 4 or x.shape[1] != channels or tuple(x.shape[2:]) != (size, size):
        raise ValueError(
            f"{name} must have shape (N, {channels}, {size}, {size}) for this config, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def check_timesteps(t: torch.Tensor, n: int) -> None:
    if t.shape != (n,):
        raise ValueError(f"t must have shape ({n},) (one timestep per image), got {tuple(t.shape)}")


def check_labels(y: torch.Tensor | None, n: int, num_classes: int | None, values: bool = True) -> None:
    """Labels are required iff the model is class-conditional, int64 (N,) in [0, num_classes).
    values=False skips the range check, the one part that reads the tensor back to the host."""
    if num_classes is None:
        if y is not None:
            raise ValueError("y was given but this model is unconditional (num_classes is None)")
        return
    if y is None:
        raise ValueError(f"y (class labels) is required: this model is class-conditional ({num_classes} classes)")
    if y.shape != (n,) or y.is_floating_point() or y.is_complex():
        raise ValueError(f"y must be an integer tensor of shape ({n},), got {y.dtype} {tuple(y.shape)}")
    if values and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got min {int(y.min())} max {int(y.max())}")


def label_count(cfg: UNetConfig) -> int | None:
    """Label values the network embeds: the classes, plus the null class when it has one."""
    return None if cfg.num_classes is None else cfg.num_classes + int(cfg.null_class)


class UNet(nn.Module):
    """ADM: BigGAN-style residual UNet with AdaGN, multi-resolution attention and class embedding."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        self.dtype = torch.float32  # torso dtype; float16 after convert_to_fp16()
        # False once a caller (the sampler) checks the label range itself, once per batch: the
        # check syncs with the device and breaks torch.compile graphs on every forward.
        self.check_label_values = True
        spec = unet_spec(cfg)
        self.time_embed = time_embed_mlp(cfg.model_channels)
        if cfg.num_classes is not None:  # + 1 row for the null class (label index num_classes)
            self.label_emb = nn.Embedding(label_count(cfg), spec.emb_channels)
        self.input_blocks, self.middle_block, skips, res = build_encoder(spec)
        heads_up = cfg.num_heads_upsample if cfg.num_heads_upsample != -1 else cfg.num_heads
        self.output_blocks = build_decoder(spec, skips, res, heads_up)
        self.out = nn.Sequential(
            normalization(spec.width(0)),
            nn.SiLU(),
            zero_module(nn.Conv2d(spec.width(0), cfg.out_channels, 3, padding=1)),
        )

    def embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Timestep embedding plus class embedding (paper §3: added, then fed to every AdaGN)."""
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels))  # (N, 4·ch)
        return emb + self.label_emb(y) if y is not None else emb

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, low_res: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (N, C, H, W), t: (N,) original timesteps, y: (N,) labels -> (N, out_channels, H, W)."""
        cfg = self.cfg
        check_image(x, cfg.image_channels, cfg.image_size)
        check_timesteps(t, x.shape[0])
        check_labels(y, x.shape[0], label_count(cfg), values=self.check_label_values)
        fp16.check_dtype_device(self.dtype, x.device)
        if cfg.super_res:
            x = torch.cat([x, upsample_low_res(low_res, x)], dim=1)  # (N, 2C, H, W)
        elif low_res is not None:
            raise ValueError("low_res was given but this model is not a super-resolution model")
        emb = self.embed(t, y)
        h, skips = x.to(self.dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))  # (N, out_channels, H, W)

    def validate_labels(self, y: torch.Tensor | None) -> None:
        """The full label check, range included (what forward skips when check_label_values is off)."""
        check_labels(y, 0 if y is None else len(y), label_count(self.cfg))

    def convert_to_fp16(self) -> None:
        """OpenAI's fp16 inference mode: torso convs in float16, norms/embeddings/output in float32."""
        fp16.convert_torso_to_fp16(self, [self.input_blocks, self.middle_block, self.output_blocks])

    def convert_to_fp32(self) -> None:
        fp16.convert_torso_to_fp32(self, [self.input_blocks, self.middle_block, self.output_blocks])


def upsample_low_res(low_res: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of the low-resolution conditioning image to x's size (SuperResModel)."""
    if low_res is None:
        raise ValueError("low_res is required: this is a super-resolution model")
    if low_res.ndim != 4 or low_res.shape[:2] != x.shape[:2]:
        raise ValueError(f"low_res must have shape ({x.shape[0]}, {x.shape[1]}, h, w), got {tuple(low_res.shape)}")
    return F.interpolate(low_res.to(x.dtype), x.shape[2:], mode="bilinear")
