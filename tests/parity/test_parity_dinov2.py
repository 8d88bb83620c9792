"""Our DINOv2 ViT-L/14 (adm/features/dinov2.py) against an independent implementation.

timm's `vit_large_patch14_dinov2` was the intended oracle, but timm needs torchvision, and the only
torchvision that pins torch==2.13.0 (0.28.0) does not import against this environment's torch
2.13.0+cpu ("operator torchvision::nms does not exist"), while timm does not import without it. So
the oracle is written here, in another form, from the official code's semantics
(facebookresearch/dinov2 `DinoVisionTransformer`, block_chunks=0, hub `dinov2_vitl14`):
a float64 functional forward that reads the state dict by its official key names (patch embedding
as unfold + matmul, q/k/v as row blocks of `attn.qkv`, heads as contiguous column groups,
attention by torch's scaled_dot_product_attention, LayerNorm and exact GELU from their formulas,
positional grid resampled by a numpy bicubic interpolation matrix).

* Transformer parity on RANDOM weights in the official key layout, tiny (2 blocks, width 64, the
  real 37x37 grid and 224px input): ours in float32 equals the float64 oracle to ~1e-6 (tolerance
  1e-5); ours in float64 to ~1e-7, the float32 positional resampling that the official code also
  does (`pos_embed.float()`) being the only float32 step left.
* The positional-grid resampling (official `interpolate_pos_encoding`: bicubic, scale factor
  (16 + 0.1) / 37, no antialias) against a numpy matrix of PyTorch's bicubic kernel (a = -0.75,
  source x = (x' + 0.5) / scale - 0.5, edge indices clamped): ~1e-14 in float64, ~1e-5 for the
  float32 resampling the official code does; a target-size resampling differs by > 1e-2.
* The full ViT-L/14 on the meta device: its keys and shapes are the official file's.
* Preprocessing: dgm-eval's transform (torchvision Resize((224, 224), BICUBIC) on a PIL image,
  which is PIL's `Image.resize`; ToTensor; Normalize) written with PIL and numpy in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from adm.features.dinov2 import VITL14, DinoV2, DinoV2Config, preprocess, resample_pos_embed

torch.set_num_threads(1)
TINY = DinoV2Config(embed_dim=64, depth=2, num_heads=4)  # 37x37 grid at 518, features at 224 as ViT-L


def random_state(cfg: DinoV2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the official layout drawn N(0, 0.1^2); LayerNorm weights around 1 and
    LayerScale gammas around 0.5, so that no branch vanishes."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in DinoV2(cfg).state_dict().items():
        x = torch.randn(v.shape, generator=g) * 0.1
        if k.endswith("gamma"):
            x += 0.5
        elif "norm" in k and k.endswith("weight"):
            x += 1.0
        state[k] = x
    return state


def _bicubic_matrix(m: int, out: int, scale_factor: float, a: float = -0.75) -> np.ndarray:
    """Rows: output positions; columns: the m input positions; PyTorch's upsample_bicubic2d."""

    def cubic(x):
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a if x < 2 else 0.0

    w = np.zeros((out, m))
    for i in range(out):
        src = (i + 0.5) / scale_factor - 0.5
        base = math.floor(src)
        for j in range(base - 1, base + 3):
            w[i, min(max(j, 0), m - 1)] += cubic(src - j)
    return w


def _layer_norm(x, weight, bias, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def oracle(state: dict, x: torch.Tensor, num_heads: int, patch: int = 14) -> torch.Tensor:
    """The official forward, functional, float64: x (N, 3, H, W) -> x_norm_clstoken (N, D)."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    n, _, h, w = x.shape
    d = s["cls_token"].shape[-1]
    cols = F.unfold(x, patch, stride=patch)  # (N, 3*p*p, T), patches row-major
    tokens = cols.transpose(1, 2) @ s["patch_embed.proj.weight"].reshape(d, -1).T + s["patch_embed.proj.bias"]
    m = math.isqrt(s["pos_embed"].shape[1] - 1)
    rows, ncols = h // patch, w // patch
    grid = s["pos_embed"][0, 1:].numpy().reshape(m, m, d)
    wr, wc = _bicubic_matrix(m, rows, (rows + 0.1) / m), _bicubic_matrix(m, ncols, (ncols + 0.1) / m)
    pos = np.einsum("ri,ijd,cj->rcd", wr, grid, wc).reshape(rows * ncols, d)
    pos = torch.cat([s["pos_embed"][0, :1], torch.from_numpy(pos)])
    z = torch.cat([s["cls_token"].expand(n, 1, d), tokens], 1) + pos
    hd = d // num_heads
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(depth):
        b = {k[len(f"blocks.{i}.") :]: v for k, v in s.items() if k.startswith(f"blocks.{i}.")}
        y = _layer_norm(z, b["norm1.weight"], b["norm1.bias"])
        qw, kw, vw = b["attn.qkv.weight"].split(d)
        qb, kb, vb = b["attn.qkv.bias"].split(d)
        q, k, v = (
            (y @ wt.T + bt).unflatten(-1, (num_heads, hd)).transpose(1, 2) for wt, bt in ((qw, qb), (kw, kb), (vw, vb))
        )
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (N, T, D)
        z = z + b["ls1.gamma"] * (att @ b["attn.proj.weight"].T + b["attn.proj.bias"])
        y = _layer_norm(z, b["norm2.weight"], b["norm2.bias"])
        y = y @ b["mlp.fc1.weight"].T + b["mlp.fc1.bias"]
        y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
        z = z + b["ls2.gamma"] * (y @ b["mlp.fc2.weight"].T + b["mlp.fc2.bias"])
    return _layer_norm(z, s["norm.weight"], s["norm.bias"])[:, 0]


def test_cls_feature_matches_the_independent_forward():
    state = random_state(TINY)
    ours = DinoV2(TINY)
    ours.load_state_dict(state)
    ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = oracle(state, x, TINY.num_heads)
        got32 = ours(x)
        got64 = ours.double()(x.double())
    assert got32.shape == want.shape == (2, TINY.embed_dim)
    err32, err64 = (got32.double() - want).abs().max().item(), (got64 - want).abs().max().item()
    print(f"max |ours - oracle|: float32 {err32:.1e}, float64 {err64:.1e} (features up to {want.abs().max():.2f})")
    assert err64 < 1e-6  # not ~1e-15: the positional resampling runs in float32, as the official code's
    assert err32 < 1e-5


def test_pos_embed_resampling_is_the_official_bicubic():
    m, d, out = 37, 5, 16
    pos = torch.randn(1, 1 + m * m, d, generator=torch.Generator().manual_seed(2))  # float32, as official
    got = resample_pos_embed(pos, out, out).numpy()
    w = _bicubic_matrix(m, out, (out + 0.1) / m)
    grid = pos[0, 1:].double().numpy().reshape(m, m, d)
    want = np.einsum("ri,ijd,cj->rcd", w, grid, w).reshape(out * out, d)  # float64
    assert np.array_equal(got[0, 0], pos[0, 0].numpy())  # the CLS position is kept
    err = np.abs(got[0, 1:] - want).max()
    print(f"max |resampled - numpy bicubic| = {err:.1e} (float32 resampling of N(0, 1) values)")
    assert err < 3e-5  # PyTorch's float32 kernel computes its source coordinates in float32
    # the matrix is PyTorch's kernel: in float64 the official call agrees with it to rounding
    exact = F.interpolate(
        torch.from_numpy(grid).permute(2, 0, 1)[None], scale_factor=((out + 0.1) / m,) * 2, mode="bicubic"
    )
    assert np.abs(exact[0].permute(1, 2, 0).reshape(-1, d).numpy() - want).max() < 1e-12
    # "+0.1" matters: the plain target-size resampling (scale 16/37) gives other positions
    plain = F.interpolate(pos[:, 1:].reshape(1, m, m, d).permute(0, 3, 1, 2), size=(out, out), mode="bicubic")
    assert np.abs(plain.permute(0, 2, 3, 1).reshape(-1, d).numpy() - want).max() > 1e-2
    assert resample_pos_embed(pos, m, m) is pos  # the 518px grid is used as it is


def test_full_vitl14_has_the_official_key_layout():
    d, hidden, grid = 1024, 4096, 37
    expected = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + grid * grid, d),
        "mask_token": (1, d),
        "patch_embed.proj.weight": (d, 3, 14, 14),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    for i in range(24):
        per_block = {
            "norm1.weight": (d,), "norm1.bias": (d,),
            "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
            "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
            "ls1.gamma": (d,),
            "norm2.weight": (d,), "norm2.bias": (d,),
            "mlp.fc1.weight": (hidden, d), "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (d, hidden), "mlp.fc2.bias": (d,),
            "ls2.gamma": (d,),
        }  # fmt: skip
        expected |= {f"blocks.{i}.{k}": v for k, v in per_block.items()}
    with torch.device("meta"):
        ours = DinoV2(VITL14).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    # 304,368,640 float32 parameters = 1,217,474,560 bytes: the released file's size less ~110 kB of
    # zip/pickle framing. The size, 1,217,586,395 bytes, is as a public list of model weights gives
    # it for dinov2_vitl14_pretrain.pth (not re-measured here: that would be a 1.2 GB download).
    params = sum(math.prod(v.shape) for v in ours.values())
    assert params == 304_368_640 and 0 < 1_217_586_395 - 4 * params < 200_000


def test_preprocessing_is_dgm_evals_transform():
    images = np.random.default_rng(3).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = np.stack(
        [(np.asarray(Image.fromarray(img).resize((224, 224), Image.BICUBIC)) / 255.0 - mean) / std for img in images]
    ).transpose(0, 3, 1, 2)
    got = preprocess(images)
    assert got.shape == (2, 3, 224, 224) and got.dtype == torch.float32
    assert np.abs(got.double().numpy() - want).max() < 1e-6
    same = preprocess(images[:, :112, :112].copy(), size=112)  # no resize at the target size: pixels kept
    assert np.allclose(same.numpy().transpose(0, 2, 3, 1) * std + mean, images[:, :112, :112] / 255.0, atol=1e-6)
