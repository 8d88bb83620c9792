"""Named presets: one per released ADM checkpoint, plus tiny demo and unit-test models.

Every ImageNet preset restates the MODEL_FLAGS of openai/guided-diffusion's README (commit
27c20a8), resolved through its `script_util` defaults (num_heads 4, num_heads_upsample -1,
dropout 0 unless the flags say otherwise). Attention resolutions are feature-map sizes, so the
README's "--attention_resolutions 32,16,8" is (32, 16, 8) here too.
"""

from __future__ import annotations

from adm.nets.config import ClassifierConfig, DiffusionConfig, UNetConfig, default_channel_mult

IMAGENET_CLASSES = 1000

# The diffusion models (paper Table 11 / README "Classifier guidance").
UNET_PRESETS: dict[str, UNetConfig] = {
    # --num_channels 192 --num_head_channels 64 --num_res_blocks 3 --dropout 0.1
    # --use_new_attention_order True --noise_schedule cosine
    "imagenet64-cond": UNetConfig(
        image_size=64,
        model_channels=192,
        num_res_blocks=3,
        attention_resolutions=(32, 16, 8),
        channel_mult=default_channel_mult(64),
        num_classes=IMAGENET_CLASSES,
        dropout=0.1,
        num_head_channels=64,
        use_new_attention_order=True,
    ),
    # --num_channels 256 --num_heads 4 --num_res_blocks 2 (fixed head count, legacy order)
    "imagenet128-cond": UNetConfig(
        image_size=128,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        channel_mult=default_channel_mult(128),
        num_classes=IMAGENET_CLASSES,
        num_heads=4,
    ),
    # --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --class_cond True
    "imagenet256-cond": UNetConfig(
        image_size=256,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        channel_mult=default_channel_mult(256),
        num_classes=IMAGENET_CLASSES,
        num_head_channels=64,
    ),
    # same flags with --class_cond False
    "imagenet256-uncond": UNetConfig(
        image_size=256,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        channel_mult=default_channel_mult(256),
        num_classes=None,
        num_head_channels=64,
    ),
    # --num_channels 256 --num_head_channels 64 --num_res_blocks 2 (first level 0.5 × 256 = 128)
    "imagenet512-cond": UNetConfig(
        image_size=512,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        channel_mult=default_channel_mult(512),
        num_classes=IMAGENET_CLASSES,
        num_head_channels=64,
    ),
    # Upsamplers: OpenAI's `sr_create_model` uses (1, 1, 2, 2, 4, 4) for BOTH large sizes 256
    # and 512 (not the 512 base model's multipliers), so the 128->512 model has 6 levels.
    # --num_channels 192 --num_heads 4 --num_res_blocks 2 --attention_resolutions 32,16,8
    "upsample64-256": UNetConfig(
        image_size=256,
        model_channels=192,
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        channel_mult=(1, 1, 2, 2, 4, 4),
        in_channels=6,
        num_classes=IMAGENET_CLASSES,
        num_heads=4,
        super_res=True,
    ),
    # --num_channels 192 --num_head_channels 64 --num_res_blocks 2 --attention_resolutions 32,16
    "upsample128-512": UNetConfig(
        image_size=512,
        model_channels=192,
        num_res_blocks=2,
        attention_resolutions=(32, 16),
        channel_mult=(1, 1, 2, 2, 4, 4),
        in_channels=6,
        num_classes=IMAGENET_CLASSES,
        num_head_channels=64,
        super_res=True,
    ),
    # Demo on 8×8 digits: two levels (8×8, 4×4), attention on the 4×4 map, 2 heads of 32 channels.
    # No dropout: a ~1000-step CPU run is far from over-fitting, and dropout costs ~10% per step.
    "demo-digits": UNetConfig(
        image_size=8,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(4,),
        channel_mult=(1, 2),
        num_classes=10,
        dropout=0.0,
        num_head_channels=32,
        use_new_attention_order=True,
    ),
    # Unit tests: the smallest net that still exercises every block type.
    "tiny-test": UNetConfig(
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(8,),
        channel_mult=(1, 2),
        num_classes=10,
        num_head_channels=32,
    ),
    # Unit tests of the upsampler: tiny-test as a 4x4 -> 16x16 super-resolution model (4x, as
    # OpenAI's 64->256 and 128->512 upsamplers).
    "tiny-test-upsample": UNetConfig(
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(8,),
        channel_mult=(1, 2),
        in_channels=6,
        num_classes=10,
        num_head_channels=32,
        super_res=True,
    ),
    # Demo upsampler, 4x4 -> 8x8 digits (2x, not the paper's 4x): the demo base model's net with
    # the low-res image as 3 more input channels. The DAG downsamples the base model's 8x8 samples
    # to 4x4 and upsamples them back, so it is evaluated against the same 8x8 reference.
    "demo-upsample": UNetConfig(
        image_size=8,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(4,),
        channel_mult=(1, 2),
        in_channels=6,
        num_classes=10,
        dropout=0.0,
        num_head_channels=32,
        use_new_attention_order=True,
        super_res=True,
    ),
}

# h = w of the low-res image each upsampler preset takes (the network resizes it to its own size
# itself, so the size is not in UNetConfig; OpenAI's README flags give it as --small_size).
UPSAMPLER_LOW_RES: dict[str, int] = {
    "upsample64-256": 64,
    "upsample128-512": 128,
    "tiny-test-upsample": 4,
    "demo-upsample": 4,
}

# The noisy-image classifiers (README "Training models" flags; 64×64 uses --classifier_depth 4).
CLASSIFIER_PRESETS: dict[str, ClassifierConfig] = {
    "imagenet64-classifier": ClassifierConfig(
        image_size=64, model_channels=128, num_res_blocks=4, channel_mult=default_channel_mult(64)
    ),
    "imagenet128-classifier": ClassifierConfig(
        image_size=128, model_channels=128, num_res_blocks=2, channel_mult=default_channel_mult(128)
    ),
    "imagenet256-classifier": ClassifierConfig(
        image_size=256, model_channels=128, num_res_blocks=2, channel_mult=default_channel_mult(256)
    ),
    "imagenet512-classifier": ClassifierConfig(
        image_size=512, model_channels=128, num_res_blocks=2, channel_mult=default_channel_mult(512)
    ),
    "demo-digits-classifier": ClassifierConfig(
        image_size=8,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(4,),
        channel_mult=(1, 2),
        num_classes=10,
        num_head_channels=32,
    ),
    "tiny-test-classifier": ClassifierConfig(
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(8,),
        channel_mult=(1, 2),
        num_classes=10,
        num_head_channels=32,
    ),
}

_LINEAR = DiffusionConfig(diffusion_steps=1000, noise_schedule="linear", learn_sigma=True)
_COSINE = DiffusionConfig(diffusion_steps=1000, noise_schedule="cosine", learn_sigma=True)

# The diffusion process each model (and the classifier trained on its noisy images) was built for.
DIFFUSION_PRESETS: dict[str, DiffusionConfig] = {
    "imagenet64-cond": _COSINE,
    "imagenet128-cond": _LINEAR,
    "imagenet256-cond": _LINEAR,
    "imagenet256-uncond": _LINEAR,
    "imagenet512-cond": _LINEAR,
    "upsample64-256": _LINEAR,
    "upsample128-512": _LINEAR,
    "demo-digits": _COSINE,
    "tiny-test": _LINEAR,
    "tiny-test-upsample": _LINEAR,
    "demo-upsample": _COSINE,
    "imagenet64-classifier": _COSINE,
    "imagenet128-classifier": _LINEAR,
    "imagenet256-classifier": _LINEAR,
    "imagenet512-classifier": _LINEAR,
    "demo-digits-classifier": _COSINE,
    "tiny-test-classifier": _LINEAR,
}


def preset_low_res_size(name: str | None = None, cfg: UNetConfig | None = None) -> int | None:
    """The low-res size of an upsampler preset, named or recognised by its config (a checkpoint's
    JSON holds the config, not the preset name); None when neither is an upsampler preset."""
    if name in UPSAMPLER_LOW_RES:
        return UPSAMPLER_LOW_RES[name]
    for preset, size in UPSAMPLER_LOW_RES.items():
        if cfg is not None and UNET_PRESETS[preset] == cfg:
            return size
    return None


def get_preset(name: str, kind: str = "model") -> UNetConfig | ClassifierConfig | DiffusionConfig:
    """Look a preset up by name; kind "model" searches UNet then classifier presets, "diffusion"
    the diffusion presets. An unknown name raises KeyError listing the known ones."""
    if kind == "diffusion":
        table: dict = DIFFUSION_PRESETS
    elif kind == "model":
        table = {**UNET_PRESETS, **CLASSIFIER_PRESETS}
    else:
        raise ValueError(f"kind must be 'model' or 'diffusion', got {kind!r}")
    if name not in table:
        raise KeyError(f"unknown {kind} preset {name!r}; known: {', '.join(sorted(table))}")
    return table[name]
