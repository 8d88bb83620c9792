"""Start a diffusion training from another model's weights (fine-tuning).

The classifier-free guidance model can be the main model fine-tuned with label dropout instead of
a second model trained from scratch (Ho & Salimans 2021 train one network for both the
conditional and the unconditional prediction; starting it from the conditional model only
teaches the null class and the dropout). The CFG network has one more label embedding row than
the main model (the null class, label index num_classes): that row starts at the mean of the
learned class rows, a neutral "some class" conditioning, and is learned by the fine-tuning.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from adm.fileio import sha256_file
from adm.nets.checkpoints import CheckpointError, first_non_finite, read_sidecar, read_state_dict, state_dict_mismatch
from adm.nets.config import UNetConfig, from_dict

LABEL_EMBEDDING = "label_emb.weight"


def check_init_config(path: str | os.PathLike, model_cfg: UNetConfig) -> None:
    """Refuse a start checkpoint whose JSON describes another network (null class aside)."""
    meta = read_sidecar(path)
    if meta is None:  # OpenAI's released files carry no JSON: keys and shapes decide below
        return
    if meta["kind"] != "unet":
        raise CheckpointError(f"{path}: --init-from needs a diffusion UNet checkpoint, this one is a {meta['kind']}")
    theirs = dataclasses.asdict(dataclasses.replace(from_dict(UNetConfig, meta["config"]), null_class=False))
    ours = dataclasses.asdict(dataclasses.replace(model_cfg, null_class=False))
    differ = [k for k in ours if theirs[k] != ours[k]]
    if differ:
        shown = ", ".join(f"{k}: file {theirs[k]!r} vs run {ours[k]!r}" for k in differ[:3])
        raise CheckpointError(f"{path}: --init-from is a different network ({shown})")


def adapt_label_embedding(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict:
    """`state` with its label embedding grown by the null-class row when the run has one more row
    than the file (the row: the mean of the file's class rows). Anything else is left as it is."""
    have, want = state.get(LABEL_EMBEDDING), expected.get(LABEL_EMBEDDING)
    if have is None or want is None or have.shape[1:] != want.shape[1:] or want.shape[0] != have.shape[0] + 1:
        return state
    null_row = have.float().mean(dim=0, keepdim=True).to(have.dtype)
    return {**state, LABEL_EMBEDDING: torch.cat([have, null_row])}


def load_init_weights(model: torch.nn.Module, model_cfg: UNetConfig, path: str | os.PathLike) -> str:
    """Copy the weights of `path` into `model` (null-class row added where needed); returns the
    file's sha256, which the run records so another start file is another run."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (--init-from)")
    check_init_config(path, model_cfg)
    state = adapt_label_embedding(read_state_dict(path), model.state_dict())
    problems = state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{path}: --init-from weights do not fit this run's network: " + "; ".join(problems))
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{path}: --init-from weights are not finite (NaN/inf in {bad})")
    with torch.no_grad():
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return sha256_file(path)
