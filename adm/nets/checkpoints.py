"""Loading and saving network weights in OpenAI's format.

A checkpoint is a plain `state_dict` `.pt` file with OpenAI's key names (so released ADM weights
load unchanged) plus, beside it, `<name>.json`:
    {"kind": "unet" | "classifier", "config": to_dict(cfg), "diffusion": to_dict(dcfg) | null}
Files are always read with `torch.load(weights_only=True)`: a checkpoint can never run code.
Writes are atomic (temporary file in the same folder + `os.replace`), so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adm.fileio import atomic_write, write_json
from adm.nets.build import build_model
from adm.nets.config import ClassifierConfig, DiffusionConfig, UNetConfig, from_dict, to_dict
from adm.nets.presets import get_preset

KINDS: dict[str, type] = {"unet": UNetConfig, "classifier": ClassifierConfig}
MAX_LISTED_KEYS = 5  # how many mismatching keys an error message names


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, wrong kind, or weights that do not fit."""


def kind_of(cfg: UNetConfig | ClassifierConfig) -> str:
    for kind, cls in KINDS.items():
        if isinstance(cfg, cls):
            return kind
    raise TypeError(f"not a network config: {type(cfg).__name__}")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON that describes a checkpoint: same name, `.json` suffix."""
    return Path(path).with_suffix(".json")


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (a full disk): one line naming the file and what was kept."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save that never leaves a partial file under `path`. A failed write (torch's writer
    raises RuntimeError, not OSError, on a full disk) is one CheckpointWriteError line."""
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as e:
        reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        kept = f"the previous {Path(path).name} is kept" if Path(path).exists() else "nothing was written under it"
        raise CheckpointWriteError(f"{path}: could not write the checkpoint ({reason}); {kept}") from None


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    write_json(path, obj)


def save_model(
    model: nn.Module,
    cfg: UNetConfig | ClassifierConfig,
    path: str | os.PathLike,
    diffusion: DiffusionConfig | None = None,
) -> None:
    """Save the weights (float32, OpenAI key names) and the JSON describing them beside."""
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    atomic_torch_save(state, path)
    meta = {
        "kind": kind_of(cfg),
        "config": to_dict(cfg),
        "diffusion": to_dict(diffusion) if diffusion is not None else None,
    }
    atomic_write_json(meta, sidecar_path(path))


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The checkpoint's JSON as a dict, or None when there is none (OpenAI's released files)."""
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side}: unreadable checkpoint description: {e}") from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS or "config" not in meta:
        raise CheckpointError(f"{side}: expected {{'kind': 'unet'|'classifier', 'config': ...}}")
    return meta


def resolve_config(path: str | os.PathLike, cfg: Any = None) -> UNetConfig | ClassifierConfig:
    """The config to build: `cfg` itself, the preset it names, or the JSON beside `path`."""
    if isinstance(cfg, str):
        try:
            cfg = get_preset(cfg)
        except KeyError as e:
            raise CheckpointError(f"{path}: {e.args[0]}") from None
    if cfg is not None:
        kind_of(cfg)  # TypeError for a non-network config
        return cfg
    meta = read_sidecar(path)
    if meta is None:
        raise CheckpointError(
            f"{path}: no {sidecar_path(path).name} beside it; give a config or a preset "
            f"name (OpenAI's released files carry no config)"
        )
    try:
        return from_dict(KINDS[meta["kind"]], meta["config"])
    except ValueError as e:
        raise CheckpointError(f"{sidecar_path(path)}: bad config: {e}") from None


HTML_STARTS = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")


def looks_like_html(path: str | os.PathLike) -> bool:
    """True for a web page saved under a checkpoint's name (a sign-in or error page)."""
    try:
        with open(path, "rb") as f:
            return f.read(512).lstrip().lower().startswith(HTML_STARTS)
    except OSError:
        return False  # torch.load below reports the file's own problem


def safe_torch_load(
    path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint", mmap: bool = False
) -> Any:
    """torch.load(weights_only=True) whose every failure is ONE line naming the file.

    torch's own message for a refused pickle runs to several lines and ends by advising
    weights_only=False, i.e. to run the file's code: we never pass that advice on.
    """
    if looks_like_html(path):  # torch would call it "Python objects other than tensors"
        raise CheckpointError(f"{path}: not a PyTorch {what}: it looks like an HTML page (a download of a web page?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a {what} file") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors, and a "
            f"{what} is only ever read as plain weights (that load never runs code)"
        ) from None
    except Exception as e:  # truncated zip, foreign format, ... (torch raises several types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable weights-only {what} ({type(e).__name__}: {first})") from None


def read_state_dict(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, torch.Tensor]:
    """The plain state_dict in `path`; any failure becomes a one-line CheckpointError naming the file.
    mmap: map the tensors' bytes instead of reading them (keys and shapes cost no I/O)."""
    state = safe_torch_load(path, map_location, mmap=mmap)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a plain state_dict (name -> tensor), got {type(state).__name__}")
    return state


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """Name of the first floating tensor holding NaN or inf (None when all are finite)."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return k
    return None


def state_dict_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between two state_dicts' keys and shapes (empty when they fit)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and expected[k].shape != got[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:MAX_LISTED_KEYS])}{more}")
    for k in shapes[:MAX_LISTED_KEYS]:
        problems.append(f"shape of {k}: file {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}")
    return problems


def _check_fits(path: str | os.PathLike, cfg: UNetConfig | ClassifierConfig, state: dict) -> nn.Module:
    """The network `cfg` builds, on the meta device, after `state`'s keys and shapes proved to fit it."""
    with torch.device("meta"):  # shapes only: the real tensors come from the file
        model = build_model(cfg)
    problems = state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{path}: weights do not fit a {kind_of(cfg)} with this config: " + "; ".join(problems))
    return model


def check_architecture(path: str | os.PathLike, preset: str) -> None:
    """Refuse a checkpoint whose keys or shapes do not fit the network of `preset`, cheaply: the
    tensors are memory-mapped, never read, so a download can be checked for its role before use."""
    cfg = resolve_config(path, preset)
    _check_fits(f"{path} (preset {preset})", cfg, read_state_dict(path, mmap=True))


def load_model(
    path: str | os.PathLike, cfg: Any = None, expect_kind: str | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, UNetConfig | ClassifierConfig]:
    """Build the network for `path` and load its weights; returns (model in eval mode, cfg).

    cfg: a UNetConfig / ClassifierConfig, a preset name, or None to read the JSON beside the file.
    expect_kind: "unet" or "classifier" to refuse the other kind with a clear message.
    """
    if not Path(path).is_file():  # before the sidecar: a missing .pt is the problem to report
        raise CheckpointError(f"{path}: no such checkpoint file")
    cfg = resolve_config(path, cfg)
    kind = kind_of(cfg)
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(f"{path}: expected a {expect_kind} checkpoint, but its config is a {kind}")
    state = read_state_dict(path, map_location)
    model = _check_fits(path, cfg, state)
    bad = first_non_finite(state)
    if bad is not None:  # NaN weights would sample all-black images and exit 0
        raise CheckpointError(f"{path}: weights are not finite (NaN/inf in {bad}); the run that wrote it diverged")
    # assign=True adopts the file's tensors (already on map_location); fp16 files become float32.
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return model.eval(), cfg
