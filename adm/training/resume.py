"""Resume safety: a checkpoint is continued only by the settings that made it.

A run's identity (run_settings) is everything that decides its weights and its log: the
networks, the diffusion process, the data's sha256 and every TrainConfig field but those in
NOT_COMPARED. `resume` continues a checkpoint of the same identity bit-exactly; any other is
refused in one line naming the field, or discarded with a one-line notice under
--restart-on-change (what the workflow passes, since Snakemake reruns a job when its params
change). A checkpoint past `--steps` is refused the same way: a model cannot be untrained.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from adm.nets.config import to_dict
from adm.training import distributed as dist
from adm.training.presets import TrainConfig
from adm.training.state import restore_rng_for_rank


def load_checkpoint(path: Path) -> dict | None:
    """The resume state in `path`, None when there is none; a CheckpointError (one line) if unreadable."""
    from adm.nets.checkpoints import CheckpointError, safe_torch_load

    if not path.exists():
        return None
    state = safe_torch_load(path, what="resume checkpoint")
    if not isinstance(state, dict) or not {"step", "meta", "model", "opt"} <= set(state):
        raise CheckpointError(f"{path}: not a resume checkpoint written by adm training")
    return state


DIGEST_FULL_BYTES = 256 * 2**20  # data up to this size is hashed whole
DIGEST_ROWS = 4096  # beyond it: every label plus this many evenly spaced images


def array_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 identifying the training data, whatever its file name or container layout.

    Small sets are hashed whole. A paper-scale set (memory-mapped, tens of GB) is identified by
    its shape, every label and DIGEST_ROWS evenly spaced images, so a start reads ~200 MB, not
    the whole set: a regenerated set with other images or labels is told apart, an edit of a
    few single images between the sampled rows is not.
    """
    h = hashlib.sha256()
    if images.nbytes > DIGEST_FULL_BYTES:
        rows = np.unique(np.linspace(0, len(images) - 1, DIGEST_ROWS).astype(np.int64))
        h.update(f"rows{len(images)}:{DIGEST_ROWS}".encode())
        images = images[rows]
    for a in (images, labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# TrainConfig fields that change neither the weights nor the log rows: where checkpoints land and
# where the run stops (a longer run continues a shorter one exactly; a checkpoint past `steps` is
# refused on its own). Every other field, the networks and the data are compared. Like the device,
# the rank count is not: every draw is a function of (seed, step, position in the global batch),
# so 2 ranks continue what 1 rank started up to float rounding, as a cluster job resumed on fewer
# GPUs must.
# (An extension's log equals the longer run's when the shorter run's --steps is a multiple of
# --log-interval, as in every preset; otherwise it keeps the shorter run's partial last row.)
NOT_COMPARED = ("steps", "save_interval")


def run_settings(
    command: str, model_cfg, diffusion_cfg, cfg: TrainConfig, data: dict, unused: tuple[str, ...] = ()
) -> dict:
    """Everything that decides a run's weights and log; `unused` names fields this loop ignores."""
    # to_dict leaves out fields added later while at their default (label_dropout 0, null_class
    # off), so a checkpoint written before they existed still resumes; any other value of them
    # differs from the checkpoint and is compared like every weight-deciding setting
    train = {k: v for k, v in to_dict(cfg).items() if k not in NOT_COMPARED + unused}
    meta = {
        "command": command,
        "model": to_dict(model_cfg),
        "diffusion": to_dict(diffusion_cfg),
        "train": train,
        "data": data,
    }
    return json.loads(json.dumps(meta))  # tuples -> lists: compares equal after a torch.save round trip


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def setting_differences(saved: dict, wanted: dict) -> list[str]:
    """'field: checkpoint X, now Y' for every differing setting (train.* shown by its flag name)."""
    a, b, absent = _flat(saved), _flat(wanted), "<absent>"
    keys = sorted(k for k in set(a) | set(b) if a.get(k, absent) != b.get(k, absent))
    return [f"{k.removeprefix('train.')}: checkpoint {a.get(k, absent)!r}, now {b.get(k, absent)!r}" for k in keys]


def stale_reason(path: Path, state: dict, meta: dict, steps: int) -> str | None:
    """Why the checkpoint cannot be continued by this run (None when it can)."""
    if not isinstance(state["meta"].get("train"), dict):  # written before every setting was recorded
        return f"{path} was written by an older adm version that did not record all its settings"
    diffs = setting_differences(state["meta"], meta)
    if diffs:
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        return f"{path} was trained with other settings ({'; '.join(diffs[:3])}{more})"
    if int(state["step"]) > steps:
        return f"{path} is at step {int(state['step'])}, past this run's --steps {steps}"
    return None


def merge_meter_states(states: list[dict]) -> dict:
    """One Meter state holding the sums and counts of all `states` (the ranks of a checkpoint)."""
    out = {"sums": {}, "counts": {}}
    for st in states:
        for part in ("sums", "counts"):
            for k, v in st.get(part, {}).items():
                out[part][k] = out[part].get(k, 0.0) + v
    return out


def discard_stale(path: Path, reason: str) -> None:
    """--restart-on-change: say why in one line, and remove the stale state (rank 0)."""
    if dist.is_main():
        print(f"notice: {reason}; starting fresh (--restart-on-change)", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
    dist.barrier()


def resume(
    path: Path,
    meta: dict,
    steps: int,
    model,
    opt,
    scaler,
    sampler=None,
    ema=None,
    meter=None,
    restart_on_change: bool = False,
) -> tuple[int, float]:
    """Load `path` if it exists and continues this run exactly; returns (start step, elapsed s).

    A checkpoint of other settings, or one past `steps`, is refused in one line naming the
    field, or with `restart_on_change` discarded (the workflow passes it: changed params mean a
    new model, never the old weights under a new train_config.json).
    """
    from adm.nets.checkpoints import CheckpointError

    try:
        state, error = load_checkpoint(path), None
    except CheckpointError as e:
        state, error = None, e
    dist.barrier()  # every rank has read the file before rank 0 may delete it
    if error is not None:
        if not restart_on_change:
            raise CheckpointError(f"{error}; delete it or pass --restart-on-change to start over") from None
        discard_stale(path, str(error))
        return 0, 0.0
    if state is None:
        return 0, 0.0
    reason = stale_reason(path, state, meta, steps)
    if reason is not None:
        if not restart_on_change:
            raise ValueError(f"{reason}; pass --restart-on-change to discard it, or use another --out-dir")
        discard_stale(path, reason)
        return 0, 0.0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    if state["scaler"] and scaler.is_enabled():  # fp16 loss scale (empty when saved without fp16)
        scaler.load_state_dict(state["scaler"])
    if sampler is not None:
        sampler.load_state_dict({k: v.numpy() for k, v in state["sampler"].items()})
    for r in ema or {}:
        for k, v in state["ema"][repr(r)].items():
            ema[r][k].copy_(v)
    restore_rng_for_rank(state["rng"])
    saved = state.get("meter") or []
    if meter is not None and len(saved) == dist.world_size():
        meter.load_state(saved[dist.rank()])
    elif meter is not None and saved and dist.is_main():  # another rank count: means() sums over ranks
        meter.load_state(merge_meter_states(saved))
    return int(state["step"]), float(state.get("elapsed_s", 0.0))
