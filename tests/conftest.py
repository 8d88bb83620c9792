"""Shared test helpers: tiny networks with non-zero deterministic weights, and the reference check.

A freshly built UNet predicts exactly 0 (its output convolution and every residual branch's last
convolution are zero-initialised), so a test that runs a fresh network cannot see anything the
network's output would reveal: a batch-dependent forward pass, a label sent to the wrong sample,
a variance channel read from the eps half. Tests that need the network to matter use
:func:`randomise_` (every parameter, buffers untouched) through the fixtures below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adm.nets.classifier import Classifier
from adm.nets.presets import get_preset
from adm.nets.unet import UNet


def randomise_(module: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Overwrite every parameter with N(0, std^2) draws from a seeded generator; returns it in eval mode.

    std = 0.05 keeps a tiny UNet's eps output O(0.1-1) and its v channels inside [-1, 1] often
    enough that sampling stays finite; parameters are visited in state-dict order, so the same
    seed gives the same weights to our network and to the reference network with the same keys.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


@pytest.fixture(scope="session")
def randomise():
    """The :func:`randomise_` helper, for test files (conftest is not importable as a module)."""
    return randomise_


@pytest.fixture(scope="session")
def demo_nets():
    """(UNet, Classifier) of the 8x8 demo-digits presets with random non-zero weights.

    Treat as read-only: session-scoped, shared by every test that asks for it.
    """
    unet = randomise_(UNet(get_preset("demo-digits")), seed=0, std=0.1)
    clf = randomise_(Classifier(get_preset("demo-digits-classifier")), seed=1, std=0.1)
    return unet, clf


class TinyNet(torch.nn.Module):
    """(x_t, t, y) -> (N, out_ch, H, W) with random weights; the output depends on all three inputs,
    per sample, so diffusion-math tests see every input (a 3x3 conv, sin(t) and a label embedding)."""

    def __init__(self, ch=3, out_ch=6, num_classes=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(ch, out_ch, 3, padding=1)
        self.t_emb = torch.nn.Parameter(torch.randn(out_ch, generator=g) * 0.3)
        self.y_emb = torch.nn.Parameter(torch.randn(num_classes, out_ch, generator=g) * 0.3)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x, t, y=None):
        h = self.conv(x) + (torch.sin(t.float() / 37.0)[:, None] * self.t_emb)[:, :, None, None]
        if y is not None:
            h = h + self.y_emb[y][:, :, None, None]
        return torch.tanh(h)  # keeps v in [-1, 1] like a trained network's variance channels


@pytest.fixture(scope="session")
def tiny_net():
    """The :class:`TinyNet` class (build with ``tiny_net(out_ch=3)`` etc.)."""
    return TinyNet


def diffusion_batch(n=4, seed=1, hw=8):
    """(x0 on the uint8 grid in [-1, 1], noise, labels) from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (n, 3, hw, hw), generator=g).float() / 127.5 - 1
    noise = torch.randn(n, 3, hw, hw, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x0, noise, y


@pytest.fixture(scope="session")
def make_batch():
    """The :func:`diffusion_batch` helper."""
    return diffusion_batch


@pytest.fixture(scope="session")
def tiny_saved_nets(tmp_path_factory):
    """A folder with ema.pt (tiny-test UNet) and clf.pt (tiny-test classifier), every parameter
    random and non-zero (a fresh UNet's zero-initialised output head would make every sample the
    same function of the noise alone, hiding label, guidance and batch effects), saved as our
    training writes them (JSON beside). Read-only: shared by every test that asks for it."""
    from adm.nets.build import build_model
    from adm.nets.checkpoints import save_model

    d = tmp_path_factory.mktemp("nets")
    unet = randomise_(build_model(get_preset("tiny-test")), seed=0)
    clf = randomise_(build_model(get_preset("tiny-test-classifier")), seed=1)
    save_model(unet, get_preset("tiny-test"), d / "ema.pt", diffusion=get_preset("tiny-test", "diffusion"))
    save_model(clf, get_preset("tiny-test-classifier"), d / "clf.pt")
    return d


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """40 random 16x16 images with labels 0..9 (the tiny-test presets' size), drawn from
    default_rng(0): images first, then labels. tests/unit/test_label_dropout.py's golden weights were
    trained on exactly these bytes: keep the draw as it is."""
    import numpy as np

    from adm.data.datasets import save_npz

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    rng = np.random.default_rng(0)
    save_npz(path, rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 40))
    return path


@pytest.fixture(scope="session")
def dinov2_standin(tmp_path_factory) -> Path:
    """The DINOv2 ViT-L/14 stand-in the rehearsals serve (tests/workflow/rehearsal_fixtures.py,
    write_dinov2_weights with the seed build_served_tree uses: the same bytes), written once per
    session: 304M seeded parameters take a while to draw and 600 MB to store, and both the paper
    rehearsal and the published check's rehearsal serve it. Read-only: link or copy it."""
    import rehearsal_fixtures as rf

    path = tmp_path_factory.mktemp("dinov2") / Path(rf.DINOV2_PATH).name
    rf.write_dinov2_weights(path, seed=3)
    return path


# The README's smoke command, run verbatim from the root of a fresh copy of the repository.
SMOKE_COMMAND = "snakemake --cores all --configfile .test/config/config.yaml"


def fresh_clone(dest: Path) -> Path:
    """What a clone of the repository holds: the tracked files and the untracked ones git does not
    ignore (so a new file shows up before it is committed), copied from the working tree; no
    results, no venv, no caches."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = root / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The smoke DAG: the README's SMOKE_COMMAND run from the root of a fresh clone, started as
    `.venv/bin/snakemake` with a failing `python` first on PATH; (clone root, seconds).
    Session-scoped: tests/workflow/test_workflow.py and tests/workflow/test_workflow_rerun.py read the same run."""
    import shlex
    import time

    from test_workflow import venv_snakemake

    workdir = fresh_clone(tmp_path_factory.mktemp("smoke") / "adm-bench")
    start = time.monotonic()
    res = venv_snakemake(workdir, *shlex.split(SMOKE_COMMAND)[1:], in_place=True, timeout=1200)
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-4000:]
    print(f"smoke workflow: {elapsed:.0f} s")
    return workdir, elapsed
