"""Fine-tuning from another model's weights (adm/training/init.py, `train-diffusion --init-from`):
the start weights are the file's, the null-class row is the mean class embedding, another network
is refused in one line, and the start file is part of what decides a run (a resume from another
start file does not continue)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from adm import cli
from adm.data.datasets import save_npz
from adm.nets.build import build_model
from adm.nets.checkpoints import CheckpointError, save_model
from adm.nets.presets import get_preset
from adm.training.init import LABEL_EMBEDDING, adapt_label_embedding, load_init_weights


def _randomised(cfg, seed):
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # zero-initialised heads would make "equal" trivially true
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


@pytest.fixture
def main_file(tmp_path):
    cfg = get_preset("tiny-test")
    model = _randomised(cfg, 1)
    save_model(model, cfg, tmp_path / "main.pt")
    return tmp_path / "main.pt", model, cfg


def test_null_row_is_the_mean_class_row():
    have = torch.arange(12.0).reshape(4, 3)
    grown = adapt_label_embedding({LABEL_EMBEDDING: have}, {LABEL_EMBEDDING: torch.zeros(5, 3)})[LABEL_EMBEDDING]
    assert torch.equal(grown[:4], have) and torch.equal(grown[4], torch.tensor([4.5, 5.5, 6.5]))
    same = adapt_label_embedding({LABEL_EMBEDDING: have}, {LABEL_EMBEDDING: torch.zeros(4, 3)})
    assert same[LABEL_EMBEDDING] is have


def test_weights_are_the_files_and_the_null_class_is_added(main_file):
    path, main, cfg = main_file
    cfg_null = dataclasses.replace(cfg, null_class=True)
    fresh = _randomised(cfg_null, 2)
    digest = load_init_weights(fresh, cfg_null, path)
    assert len(digest) == 64
    ours, theirs = fresh.state_dict(), main.state_dict()
    for k, v in theirs.items():
        if k == LABEL_EMBEDDING:
            assert torch.equal(ours[k][:-1], v) and torch.allclose(ours[k][-1], v.mean(0))
        else:
            assert torch.equal(ours[k], v), k


def test_another_network_is_refused_in_one_line(main_file, tmp_path):
    path, _, cfg = main_file
    wider = dataclasses.replace(cfg, model_channels=cfg.model_channels * 2)
    with pytest.raises(CheckpointError, match="different network .*model_channels") as e:
        load_init_weights(build_model(wider), wider, path)
    assert "\n" not in str(e.value)
    path.with_suffix(".json").unlink()  # no description (a released file): the shapes decide
    with pytest.raises(CheckpointError, match="do not fit this run's network"):
        load_init_weights(build_model(wider), wider, path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_init_weights(build_model(cfg), cfg, tmp_path / "missing.pt")


def _train(tmp_path, out, *extra):
    g = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    if not data.exists():
        save_npz(data, g.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), g.integers(0, 10, 16))
    argv = ["train-diffusion", "--data", str(data), "--model-preset", "tiny-test", "--no-progress"]
    return cli.main(argv + ["--out-dir", str(tmp_path / out), *extra])


def test_program_fine_tunes_from_the_file(main_file, tmp_path, capsys):
    """The fine-tuned run starts at the file's weights: at lr 1e-12 its EMA is the file (plus the
    null row); another start file is another run (refused without --restart-on-change)."""
    path, main, _ = main_file
    flags = ["--init-from", str(path), "--label-dropout", "0.1", "--lr", "1e-12", "--steps", "2"]
    assert _train(tmp_path, "ft", *flags) == 0
    ema = torch.load(tmp_path / "ft/ema.pt", weights_only=True)
    for k, v in main.state_dict().items():
        assert torch.allclose(ema[k][: len(v)] if k == LABEL_EMBEDDING else ema[k], v, atol=1e-8), k
    assert _train(tmp_path, "scratch", "--label-dropout", "0.1", "--lr", "1e-12", "--steps", "2") == 0
    fresh = torch.load(tmp_path / "scratch/ema.pt", weights_only=True)
    assert any(not torch.allclose(fresh[k], ema[k], atol=1e-3) for k in ema)

    other = tmp_path / "other.pt"
    save_model(_randomised(get_preset("tiny-test"), 3), get_preset("tiny-test"), other)
    capsys.readouterr()
    assert _train(tmp_path, "ft", *flags[:1], str(other), *flags[2:6], "--steps", "4") == 2
    err = capsys.readouterr().err
    assert "init_sha256" in err and len(err.strip().splitlines()) == 1
