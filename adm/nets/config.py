"""Typed, frozen configurations for the networks and the diffusion process.

Every list-like field is a tuple (never a comma string such as "32,16,8"); `to_dict` / `from_dict`
turn a config into JSON-able data and back, so the resolved config can sit next to every output.
Field names follow OpenAI's flags (`num_channels` -> `model_channels`, `classifier_depth` ->
`num_res_blocks`) so a README command line maps onto a config one field at a time.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

# Channel multipliers per image size, as in OpenAI's `create_model` / `create_classifier`
# (Dhariwal & Nichol 2021, Appendix, Table 11: one level per halving of the feature map).
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
    512: (0.5, 1, 1, 2, 2, 4, 4),
}

# Field metadata for settings added after outputs were published: `to_dict` leaves such a field
# out while it holds its default, so every JSON (and resume identity) written without the
# feature keeps its bytes, and files written before the field existed still read back.
OMIT_AT_DEFAULT = {"omit_at_default": True}

GROUPNORM_GROUPS = 32  # every GroupNorm in ADM uses 32 groups: widths must be multiples of 32


def default_channel_mult(image_size: int) -> tuple[float, ...]:
    """The per-level channel multipliers OpenAI uses for `image_size` (64/128/256/512)."""
    if image_size not in DEFAULT_CHANNEL_MULT:
        known = ", ".join(str(s) for s in DEFAULT_CHANNEL_MULT)
        raise ValueError(f"no default channel_mult for image_size {image_size} (known: {known}); give channel_mult")
    return DEFAULT_CHANNEL_MULT[image_size]


def _check_levels(image_size: int, channel_mult: tuple[float, ...], model_channels: int) -> None:
    """The image must halve cleanly once per level, and every level's width must suit GroupNorm(32)."""
    if not channel_mult:
        raise ValueError("channel_mult is empty")
    if image_size % 2 ** (len(channel_mult) - 1):
        raise ValueError(
            f"image_size {image_size} is not divisible by 2**{len(channel_mult) - 1} "
            f"(one halving per channel_mult level)"
        )
    for mult in channel_mult:
        width = int(mult * model_channels)
        if width <= 0 or width % GROUPNORM_GROUPS:
            raise ValueError(
                f"level width int({mult} * {model_channels}) = {width} is not a positive "
                f"multiple of {GROUPNORM_GROUPS} (GroupNorm groups)"
            )


@dataclass(frozen=True)
class UNetConfig:
    image_size: int  # H = W of x_t, pixels
    model_channels: int  # base width ("num_channels")
    num_res_blocks: int  # ResBlocks per level on the way down (up path has one more)
    attention_resolutions: tuple[int, ...]  # FEATURE-MAP sizes (32, 16, 8), not downsample rates
    channel_mult: tuple[float, ...]  # per level; the 512 model uses 0.5
    in_channels: int = 3  # 6 for super-resolution (x ‖ upsampled low-res)
    learn_sigma: bool = True  # out_channels = 2 * image channels (eps and v) if True
    num_classes: int | None = None  # None = unconditional
    dropout: float = 0.0  # dropout inside every ResBlock
    num_heads: int = 4  # attention heads when num_head_channels is -1
    num_head_channels: int = -1  # >0: heads = channels // num_head_channels
    num_heads_upsample: int = -1  # heads on the up path; -1 = num_heads (deprecated)
    use_scale_shift_norm: bool = True  # AdaGN: GroupNorm(h)·(1+scale)+shift (paper §3)
    resblock_updown: bool = True  # BigGAN residual blocks for up/downsampling (paper §3)
    use_new_attention_order: bool = False  # split q,k,v before heads (True) or heads first (legacy)
    super_res: bool = False  # SuperResUNet: forward(x, t, y, low_res)
    use_checkpoint: bool = False  # gradient checkpointing (memory for compute)
    # one extra label embedding, index num_classes, for "no label" (classifier-free guidance
    # trains with it, Ho & Salimans 2021); labels then lie in [0, num_classes]
    null_class: bool = field(default=False, metadata=OMIT_AT_DEFAULT)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        _check_levels(self.image_size, self.channel_mult, self.model_channels)
        if self.null_class and self.num_classes is None:
            raise ValueError("null_class needs a class-conditional model (num_classes is None)")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.super_res and self.in_channels % 2:
            raise ValueError(f"super_res needs an even in_channels (x ‖ low_res), got {self.in_channels}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def image_channels(self) -> int:
        """Channels of x_t itself (the low-res image is the other half of in_channels for super-res)."""
        return self.in_channels // 2 if self.super_res else self.in_channels

    @property
    def out_channels(self) -> int:
        """eps (and the variance interpolation v when learn_sigma), Nichol & Dhariwal 2021 Eq. 15."""
        return self.image_channels * (2 if self.learn_sigma else 1)


@dataclass(frozen=True)
class ClassifierConfig:
    image_size: int  # H = W of x_t, pixels
    model_channels: int = 128  # classifier_width
    num_res_blocks: int = 2  # classifier_depth
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # FEATURE-MAP sizes
    channel_mult: tuple[float, ...] = ()  # () = size default (see DEFAULT_CHANNEL_MULT)
    num_classes: int = 1000  # logits per image
    in_channels: int = 3  # channels of x_t
    num_head_channels: int = 64  # channels per attention head (also the attention pool's)
    use_scale_shift_norm: bool = True  # AdaGN in every ResBlock
    resblock_updown: bool = True  # BigGAN residual blocks for downsampling
    pool: str = "attention"  # or "adaptive": how the 1×C logits are read off the map
    dropout: float = 0.0  # dropout inside every ResBlock

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        _check_levels(self.image_size, self.resolved_channel_mult, self.model_channels)
        if self.pool not in ("attention", "adaptive"):
            raise ValueError(f"pool must be 'attention' or 'adaptive', got {self.pool!r}")
        if self.pool == "attention" and self.num_head_channels <= 0:
            raise ValueError("pool='attention' needs num_head_channels > 0")
        if self.num_classes < 1 or self.num_res_blocks < 1:
            raise ValueError("num_classes and num_res_blocks must be >= 1")

    @property
    def resolved_channel_mult(self) -> tuple[float, ...]:
        """channel_mult, or OpenAI's default for this image size when left empty."""
        return self.channel_mult or default_channel_mult(self.image_size)


@dataclass(frozen=True)
class DiffusionConfig:
    diffusion_steps: int = 1000  # T
    noise_schedule: str = "linear"  # "linear" | "cosine" (Nichol & Dhariwal 2021 Eq. 17)
    learn_sigma: bool = True  # the network also outputs v (Eq. 15) and trains on L_hybrid

    def __post_init__(self) -> None:
        if self.noise_schedule not in ("linear", "cosine"):
            raise ValueError(f"noise_schedule must be 'linear' or 'cosine', got {self.noise_schedule!r}")
        if self.diffusion_steps < 1:
            raise ValueError(f"diffusion_steps must be >= 1, got {self.diffusion_steps}")


Config = UNetConfig | ClassifierConfig | DiffusionConfig


def to_dict(cfg) -> dict:
    """JSON-able dict of a config dataclass (tuples become lists when serialised by `json`);
    fields marked OMIT_AT_DEFAULT are left out while they hold their default."""
    d = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get("omit_at_default") and d[f.name] == f.default:
            del d[f.name]
    return d


def from_dict(cls: type, d: dict) -> Config:
    """Rebuild `cls` from `to_dict` output; lists become tuples, an unknown key is a ValueError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        is_tuple = typing.get_origin(hints[name]) is tuple
        kwargs[name] = tuple(value) if is_tuple and isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as e:  # a missing required field
        raise ValueError(f"cannot build {cls.__name__} from {sorted(d)}: {e}") from None
