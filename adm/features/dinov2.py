"""DINOv2 ViT-L/14 (Oquab et al. 2023) as the feature network of FD_DINOv2 (Stein et al. 2023).

Reference followed: dgm-eval (layer6ai-labs/dgm-eval, `DINOv2Encoder`), the code of Stein et al.
(2023), who introduced FD_DINOv2:
  * network: torch.hub `facebookresearch/dinov2` `dinov2_vitl14`, i.e. the released
    `dinov2_vitl14_pretrain.pth`; the feature is `model(x)` = the CLS token after the final
    LayerNorm (`x_norm_clstoken`), 1024-d;
  * preprocessing: each uint8 RGB image as a PIL image, resized to 224x224 with PIL's bicubic
    filter (torchvision `Resize((224, 224), BICUBIC)` on a PIL image calls `Image.resize`), then
    `ToTensor` (x / 255) and `Normalize` with the ImageNet mean/std.
(EDM2's code, which the later guidance papers use, has its own DINOv2 detector that resizes
tensors instead; its numbers may differ slightly, so every record names the preprocessing.)

The architecture, in the checkpoint's key layout (block_chunks = 0, no register tokens):
patch_embed.proj (conv 14x14, stride 14), cls_token, pos_embed (1 + 37x37 positions: the 518px
pretraining grid), mask_token (iBOT masking, unused here but part of the file), blocks.N.{norm1,
attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm. Pre-norm blocks with
LayerScale, LayerNorm eps 1e-6, exact GELU, biases on qkv/proj/MLP. At 224px the 16x16 patch grid
takes the 37x37 positional embeddings resampled as the official `interpolate_pos_encoding` does:
bicubic (a = -0.75, align_corners=False, no antialias) with scale factor (16 + 0.1) / 37, the "+0.1"
being the official code's guard against rounding the output size down.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from adm.nets.checkpoints import CheckpointError, first_non_finite, read_state_dict, state_dict_mismatch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision / timm IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)
# Names what the features are, for the cache key and the records: a change here is a new number.
FEATURES_VERSION = "dinov2-vitl14-cls/dgm-eval-pil-bicubic-224/1"


@dataclass(frozen=True)
class DinoV2Config:
    embed_dim: int = 1024  # token width (ViT-L)
    depth: int = 24  # transformer blocks
    num_heads: int = 16  # attention heads (64 channels each)
    mlp_ratio: int = 4  # MLP hidden width / embed_dim
    patch_size: int = 14  # pixels per patch side
    pretrain_size: int = 518  # image side of the checkpoint's positional grid (37 x 37 patches)
    image_size: int = 224  # image side the features are computed at (dgm-eval)


VITL14 = DinoV2Config()


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT); `gamma` is the checkpoint's name."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        weights = (q * (d // self.num_heads) ** -0.5) @ k.transpose(-2, -1)  # (N, heads, T, T)
        out = weights.softmax(dim=-1) @ v  # (N, heads, T, d_head)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: DinoV2Config):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        self.ls1 = LayerScale(d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, d * cfg.mlp_ratio)
        self.ls2 = LayerScale(d)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: DinoV2Config):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, h*w patches, D), row-major


def resample_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The official `interpolate_pos_encoding`: the CLS position kept, the M x M grid resampled to
    rows x cols by bicubic interpolation with scale factor (rows + 0.1) / M (not a target size)."""
    m = math.isqrt(pos_embed.shape[1] - 1)
    if rows == cols == m:
        return pos_embed
    cls_pos, grid = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    grid = grid.reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1, D, M, M)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / m, (cols + 0.1) / m), mode="bicubic")
    if grid.shape[-2:] != (rows, cols):
        raise ValueError(f"positional grid resampled to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([cls_pos, grid], dim=1).to(pos_embed.dtype)


class DinoV2(nn.Module):
    """`forward(x)`: ImageNet-normalised images (N, 3, H, W), H and W multiples of 14 -> the CLS
    feature after the final norm (N, D)."""

    def __init__(self, cfg: DinoV2Config = VITL14):
        super().__init__()
        self.cfg = cfg
        d, grid = cfg.embed_dim, cfg.pretrain_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # training only; kept so the file loads strictly
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x):
        n, _, h, w = x.shape
        p = self.cfg.patch_size
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), self.patch_embed(x)], dim=1)  # (N, 1+T, D)
        tokens = tokens + resample_pos_embed(self.pos_embed, h // p, w // p)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]  # (N, D): x_norm_clstoken


def preprocess(images: np.ndarray, size: int = VITL14.image_size) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 (N, 3, size, size): PIL bicubic resize, /255, ImageNet mean/std
    (dgm-eval's transform)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N,H,W,3], got {images.dtype} {list(images.shape)}")
    resized = np.stack(
        [np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC)) for img in images]
    )  # (N, size, size, 3) uint8, as ToTensor receives it
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def check_weights(path: str | os.PathLike, state: dict | None = None, cfg: DinoV2Config = VITL14) -> dict:
    """The state dict in `path` after its keys and shapes proved to be DINOv2 ViT-L/14's; anything
    else (another ViT size, the register variant, an ADM checkpoint) is one CheckpointError line."""
    state = read_state_dict(path, mmap=True) if state is None else state
    with torch.device("meta"):
        expected = DinoV2(cfg).state_dict()
    problems = state_dict_mismatch(expected, state)
    if problems:
        raise CheckpointError(
            f"{path}: not DINOv2 weights of this architecture (dinov2_vitl14_pretrain.pth): " + "; ".join(problems)
        )
    return state


def load_dinov2(path: str | os.PathLike, device: str | torch.device = "cpu", cfg: DinoV2Config = VITL14) -> DinoV2:
    """The network with the weights in `path` (read weights-only), in eval mode on `device`."""
    state = check_weights(path, read_state_dict(path), cfg)
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or inf")
    with torch.device("meta"):
        model = DinoV2(cfg)
    model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    return model.to(device).eval()
