"""The noisy-image classifier p_φ(y | x_t, t) used for guidance (Dhariwal & Nichol 2021, §4).

It is the down half of the UNet (same blocks, same timestep embedding) followed by a pooling head
(paper §4: "the downsampling trunk of the UNet with an attention pool at the 8×8 layer").
State-dict keys equal OpenAI's `EncoderUNetModel` (`out.*` for the head).
"""

from __future__ import annotations

import torch
from torch import nn

from adm.nets import fp16
from adm.nets.blocks import AttentionPool2d, normalization, timestep_embedding, zero_module
from adm.nets.config import ClassifierConfig
from adm.nets.unet import EncoderSpec, build_encoder, check_image, check_timesteps, time_embed_mlp


def classifier_spec(cfg: ClassifierConfig) -> EncoderSpec:
    # OpenAI's create_classifier: one head unless num_head_channels is given, legacy q,k,v order.
    return EncoderSpec(
        cfg.image_size,
        cfg.in_channels,
        cfg.model_channels,
        cfg.num_res_blocks,
        cfg.attention_resolutions,
        cfg.resolved_channel_mult,
        cfg.dropout,
        1,
        cfg.num_head_channels,
        cfg.use_scale_shift_norm,
        cfg.resblock_updown,
        new_attention_order=False,
        use_checkpoint=False,
    )


def pool_head(cfg: ClassifierConfig, channels: int, res: int) -> nn.Sequential:
    """norm -> SiLU -> pool to logits. Keys out.0 (norm), then out.2.* (attention) or out.3 (adaptive)."""
    if cfg.pool == "attention":
        pool = AttentionPool2d(res, channels, cfg.num_head_channels, cfg.num_classes)
        return nn.Sequential(normalization(channels), nn.SiLU(), pool)
    return nn.Sequential(
        normalization(channels),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d((1, 1)),
        zero_module(nn.Conv2d(channels, cfg.num_classes, 1)),
        nn.Flatten(),
    )


class Classifier(nn.Module):
    """Encoder UNet + pooling head: forward(x_t, t) -> logits (N, num_classes)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.dtype = torch.float32  # torso dtype; float16 after convert_to_fp16()
        spec = classifier_spec(cfg)
        self.time_embed = time_embed_mlp(cfg.model_channels)
        self.input_blocks, self.middle_block, _, res = build_encoder(spec)
        self.out = pool_head(cfg, spec.width(len(spec.channel_mult) - 1), res)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) noisy images, t: (N,) original timesteps -> (N, num_classes) logits."""
        check_image(x, self.cfg.in_channels, self.cfg.image_size)
        check_timesteps(t, x.shape[0])
        fp16.check_dtype_device(self.dtype, x.device)
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels))  # (N, 4·ch)
        h = x.to(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)  # (N, C', h, w)
        return self.out(h.to(x.dtype))  # (N, num_classes)

    def convert_to_fp16(self) -> None:
        """OpenAI's classifier_use_fp16: torso convs in float16, norms and the head in float32."""
        fp16.convert_torso_to_fp16(self, [self.input_blocks, self.middle_block])

    def convert_to_fp32(self) -> None:
        fp16.convert_torso_to_fp32(self, [self.input_blocks, self.middle_block])
