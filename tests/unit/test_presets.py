"""Configs and presets: JSON round trips, validation, and the README facts each preset restates."""

from __future__ import annotations

import dataclasses
import json

import pytest

from adm.nets.config import (
    ClassifierConfig,
    DiffusionConfig,
    UNetConfig,
    default_channel_mult,
    from_dict,
    to_dict,
)
from adm.nets.presets import CLASSIFIER_PRESETS, DIFFUSION_PRESETS, UNET_PRESETS, get_preset

ALL_MODELS = {**UNET_PRESETS, **CLASSIFIER_PRESETS}


@pytest.mark.parametrize("name", sorted(ALL_MODELS) + sorted(DIFFUSION_PRESETS))
def test_json_round_trip(name):
    cfg = ALL_MODELS.get(name) or DIFFUSION_PRESETS[name]
    data = json.loads(json.dumps(to_dict(cfg)))  # tuples come back as lists
    assert from_dict(type(cfg), data) == cfg


def test_from_dict_rejects_unknown_and_missing_keys():
    data = to_dict(UNET_PRESETS["tiny-test"])
    with pytest.raises(ValueError, match="unknown UNetConfig key.*num_channels"):
        from_dict(UNetConfig, {**data, "num_channels": 3})
    del data["image_size"]
    with pytest.raises(ValueError, match="image_size"):
        from_dict(UNetConfig, data)


def test_configs_are_frozen_and_use_tuples():
    cfg = UNetConfig(
        image_size=64, model_channels=64, num_res_blocks=1, attention_resolutions=[16, 8], channel_mult=[1, 2]
    )
    assert cfg.attention_resolutions == (16, 8) and cfg.channel_mult == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image_size = 32


def test_get_preset_lists_names_on_unknown():
    assert get_preset("imagenet128-cond") is UNET_PRESETS["imagenet128-cond"]
    assert get_preset("imagenet128-classifier") is CLASSIFIER_PRESETS["imagenet128-classifier"]
    assert get_preset("imagenet64-cond", kind="diffusion").noise_schedule == "cosine"
    with pytest.raises(KeyError, match="imagenet128-cond.*"):
        get_preset("imagenet128")


def test_every_model_preset_has_a_diffusion_preset():
    assert set(DIFFUSION_PRESETS) == set(ALL_MODELS)
    schedules = {name: d.noise_schedule for name, d in DIFFUSION_PRESETS.items()}
    assert schedules["imagenet64-cond"] == schedules["demo-digits"] == "cosine"
    for name in (
        "imagenet128-cond",
        "imagenet256-cond",
        "imagenet256-uncond",
        "imagenet512-cond",
        "upsample64-256",
        "upsample128-512",
    ):
        assert schedules[name] == "linear"
        assert DIFFUSION_PRESETS[name].diffusion_steps == 1000


def test_imagenet_presets_restate_readme_flags():
    """Spot checks against openai/guided-diffusion README MODEL_FLAGS (commit 27c20a8)."""
    m64, m128 = UNET_PRESETS["imagenet64-cond"], UNET_PRESETS["imagenet128-cond"]
    assert (m64.model_channels, m64.num_res_blocks, m64.num_head_channels, m64.dropout) == (192, 3, 64, 0.1)
    assert m64.use_new_attention_order and m64.channel_mult == (1, 2, 3, 4)
    assert (m128.model_channels, m128.num_heads, m128.num_head_channels) == (256, 4, -1)
    assert UNET_PRESETS["imagenet256-uncond"].num_classes is None
    assert UNET_PRESETS["imagenet512-cond"].channel_mult == (0.5, 1, 1, 2, 2, 4, 4)
    for cfg in ALL_MODELS.values():
        assert cfg.use_scale_shift_norm and cfg.resblock_updown
    for name, cfg in UNET_PRESETS.items():
        assert cfg.learn_sigma and cfg.out_channels == 6
        if name.startswith(("imagenet", "upsample")):
            assert cfg.num_classes in (None, 1000) and cfg.attention_resolutions[:2] == (32, 16)
    assert UNET_PRESETS["upsample128-512"].attention_resolutions == (32, 16)
    assert UNET_PRESETS["upsample64-256"].in_channels == 6 and UNET_PRESETS["upsample64-256"].super_res


def test_classifier_presets():
    assert CLASSIFIER_PRESETS["imagenet64-classifier"].num_res_blocks == 4
    for size in (128, 256, 512):
        cfg = CLASSIFIER_PRESETS[f"imagenet{size}-classifier"]
        assert (cfg.model_channels, cfg.num_res_blocks, cfg.pool, cfg.num_classes) == (128, 2, "attention", 1000)
        assert cfg.resolved_channel_mult == default_channel_mult(size)
    assert ClassifierConfig(image_size=256).resolved_channel_mult == (1, 1, 2, 2, 4, 4)
    demo = CLASSIFIER_PRESETS["demo-digits-classifier"]
    assert (demo.image_size, demo.model_channels, demo.num_res_blocks, demo.channel_mult) == (8, 32, 1, (1, 2))
    assert demo.attention_resolutions == (4,) and demo.num_classes == 10


def test_demo_preset():
    demo = UNET_PRESETS["demo-digits"]
    assert (demo.image_size, demo.model_channels, demo.num_res_blocks, demo.channel_mult) == (8, 32, 1, (1, 2))
    assert demo.attention_resolutions == (4,) and demo.num_classes == 10 and demo.learn_sigma


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(pool="spatial"), "pool must be"),
        (dict(pool="attention", num_head_channels=-1), "num_head_channels"),
        (dict(image_size=48), "no default channel_mult"),
    ],
)
def test_classifier_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        ClassifierConfig(**{"image_size": 64, **bad})


def test_diffusion_config_validation():
    with pytest.raises(ValueError, match="noise_schedule"):
        DiffusionConfig(noise_schedule="quadratic")
