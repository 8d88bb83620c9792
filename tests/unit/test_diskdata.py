"""ImageNet-scale data: prepare an ImageNet-style folder once into a memory-mappable npz, resume a
killed prepare to the same bytes, and train from a memmap (never a whole-dataset load)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import resource
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adm import cli
from adm.data.datasets import DataError, list_image_files, prepare_digits, save_npz
from adm.data.ondisk import (
    _finish,
    _local_header,
    _npy_header_bytes,
    open_dataset,
    prepare_folder,
    synset_labels,
)
from adm.training.draws import batch_indices
from adm.training.presets import resolve_train_config
from adm.training.state import load_training_data

REPO = Path(__file__).resolve().parents[2]
SYNSETS = ["n01530575", "n01440764", "n02102040"]  # deliberately not in sorted order on disk


def _imagenet_folder(root: Path, per_class: int = 7, seed: int = 0) -> Path:
    """JPEGs of odd sizes (some large enough for ADM's BOX halving) in synset folders, named as
    ImageNet's train set (<synset>/<synset>_<k>.JPEG), plus one PNG and a stray text file."""
    rng = np.random.default_rng(seed)
    for s in SYNSETS:
        for k in range(per_class):
            w, h = (int(v) for v in rng.integers(18, 90, 2))
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            p = root / s / f"{s}_{k}.JPEG"
            p.parent.mkdir(parents=True, exist_ok=True)
            img.save(p, quality=85)
    Image.fromarray(rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)).convert("L").save(root / SYNSETS[0] / "gray.png")
    (root / SYNSETS[1] / "README.txt").write_text("not an image")
    return root


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _imagenet_folder(tmp_path_factory.mktemp("imagenet") / "train")


@pytest.fixture(scope="module")
def clean(folder, tmp_path_factory):
    """An uninterrupted prepare (2 decode processes): the bytes every resumed run must match."""
    out = tmp_path_factory.mktemp("clean")
    prepare_folder(folder, 16, out / "train.npz", out / "heldout.npz", 0.25, seed=3, workers=2, progress=False, chunk=4)
    return out


def _reference_center_crop(monkeypatch):
    """guided_diffusion.image_datasets.center_crop_arr (test-only import; its module wants
    mpi4py, which the crop never uses, so a stand-in module satisfies the import)."""
    pytest.importorskip("guided_diffusion")
    monkeypatch.setitem(sys.modules, "mpi4py", types.SimpleNamespace(MPI=None))
    return importlib.import_module("guided_diffusion.image_datasets").center_crop_arr


def test_prepared_npz_is_openai_format_with_reference_crops_and_synset_labels(folder, clean, monkeypatch):
    crop = _reference_center_crop(monkeypatch)
    files = list_image_files(folder)
    labels, classes = synset_labels(files, folder)
    assert classes == sorted(SYNSETS) and len(files) == 3 * 7 + 1
    for name in ("train.npz", "heldout.npz"):
        with zipfile.ZipFile(clean / name) as zf:
            assert zf.testzip() is None  # every CRC-32 right: any zip reader accepts the file
            assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_STORED] * 2
        raw = (clean / name).read_bytes()
        for info in zf.infolist():  # local headers agree with the directory (readers like unzip check both)
            assert int.from_bytes(raw[info.header_offset + 14 : info.header_offset + 18], "little") == info.CRC
    with np.load(clean / "train.npz") as f:
        x, y = f["arr_0"], f["arr_1"]
    with np.load(clean / "heldout.npz") as f:
        xh, yh = f["arr_0"], f["arr_1"]
    assert x.dtype == np.uint8 and x.shape[1:] == (16, 16, 3) and y.dtype == np.int64
    assert len(x) + len(xh) == len(files) and sorted(np.concatenate([y, yh]).tolist()) == sorted(labels.tolist())
    # every stored image is OpenAI's center crop of some file of the same class
    expect = {}
    for p, lab in zip(files, labels):
        with Image.open(p) as im:
            im.load()
            expect.setdefault(int(lab), []).append(crop(im.convert("RGB"), 16))
    for img, lab in zip(np.concatenate([x, xh]), np.concatenate([y, yh])):
        assert any(np.array_equal(img, e) for e in expect[int(lab)])


def test_synset_index_equals_adm_file_prefix_rule_on_imagenet_layout(folder):
    files = [p for p in list_image_files(folder) if p.name.startswith("n")]
    # ADM's rule: class = file name before the first "_", label = its index among the sorted names
    names = [p.name.split("_")[0] for p in files]
    prefix_labels = [sorted(set(names)).index(n) for n in names]
    assert synset_labels(files, folder)[0].tolist() == prefix_labels


def test_label_is_the_folder_not_the_file_name(tmp_path):
    for rel in ("n02/n02_0.JPEG", "n01/stray_0.JPEG", "n01/n01_1.JPEG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / rel)
    labels, classes = synset_labels(list_image_files(tmp_path), tmp_path)
    assert classes == ["n01", "n02"] and labels.tolist() == [0, 0, 1]  # n01/n01_1, n01/stray_0, n02/...


_KILLER = """
import os, signal, sys
import psutil
import adm.data.ondisk as d
real, calls = d._save_progress, {"n": 0}
def killing(marker, state):  # the job is killed: decode workers first, then this process
    calls["n"] += 1
    if calls["n"] == 3 and sys.argv[1] == "after":
        real(marker, state)
    if calls["n"] == 3:
        for p in psutil.Process().children(recursive=True):
            p.kill()
        os.kill(os.getpid(), signal.SIGKILL)
    real(marker, state)
d._save_progress = killing
if __name__ == "__main__":
    d.prepare_folder(sys.argv[2], 16, sys.argv[3] + "/train.npz", sys.argv[3] + "/heldout.npz", 0.25, seed=3,
                     workers=2, progress=False, chunk=4)
"""


@pytest.mark.parametrize("when", ["after", "before"])  # kill after chunk 3's marker / with chunk 3 unmarked
def test_killed_prepare_resumes_to_the_bytes_of_a_clean_run(when, folder, clean, tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, str(script), when, str(folder), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -9, r.stderr
    partial, marker = tmp_path / ".train.npz.partial", tmp_path / ".train.npz.progress.json"
    assert partial.exists() and marker.exists() and not (tmp_path / "train.npz").exists()
    done = json.loads(marker.read_text())["done"]
    assert done == (12 if when == "after" else 8)  # chunks of 4: the marker lags one chunk when killed before it
    if when == "before":  # chunk 3's bytes reached the file: resume must cut them off and redo them
        assert partial.stat().st_size > len(_npy_header_bytes((16, 16, 16, 3), np.uint8)) + 59 + done * 768
    prepare_folder(
        folder, 16, tmp_path / "train.npz", tmp_path / "heldout.npz", 0.25, seed=3, workers=2, progress=False, chunk=4
    )
    assert _sha(tmp_path / "train.npz") == _sha(clean / "train.npz")
    assert _sha(tmp_path / "heldout.npz") == _sha(clean / "heldout.npz")
    assert not partial.exists() and not marker.exists()


def test_a_changed_folder_restarts_instead_of_resuming(folder, clean, tmp_path):
    stale = tmp_path / ".train.npz.partial"
    stale.write_bytes(b"x" * 5000)
    (tmp_path / ".train.npz.progress.json").write_text(
        json.dumps({"format": "adm-npz-stored/1", "done": 4, "fingerprint": "other", "crc": 0})
    )
    prepare_folder(folder, 16, tmp_path / "train.npz", tmp_path / "heldout.npz", 0.25, seed=3, progress=False)
    assert _sha(tmp_path / "train.npz") == _sha(clean / "train.npz")


def test_training_memory_maps_the_prepared_file_and_ranks_split_each_batch(clean):
    cfg = resolve_train_config("tiny-test", batch_size=6)
    images, labels, local, micro = load_training_data(clean / "train.npz", 16, 3, cfg)
    assert isinstance(images, np.memmap) and Path(images.filename) == (clean / "train.npz").resolve()
    assert (local, micro) == (6, 6) and labels.dtype == np.int64
    with np.load(clean / "train.npz") as f:
        np.testing.assert_array_equal(images[[4, 0, 2]], f["arr_0"][[4, 0, 2]])
    whole = batch_indices(0, 5, 6, len(images))[0]
    shares = [batch_indices(0, 5, 6, len(images), rank=r, world=2)[0] for r in range(2)]
    assert np.array_equal(np.concatenate(shares), whole)  # rank r reads only rows of its half


def test_the_digits_demo_npz_trains_from_a_memmap_too(tmp_path):
    prepare_digits(tmp_path / "train.npz", tmp_path / "heldout.npz", 0.2, 0)
    images, labels = open_dataset(tmp_path / "train.npz", 8)
    assert isinstance(images, np.memmap) and images.shape[1:] == (8, 8, 3) and len(labels) == len(images)


def test_open_dataset_reads_no_image_bytes_of_a_5_gb_file(tmp_path):
    """A sparse 4.4 GB arr_0 (>4 GiB: arr_1's zip64 offset) opens in no memory: a full load would
    allocate all of it. The same writer functions as prepare-data lay out the zip."""
    n, size = 90_000, 128
    npy = _npy_header_bytes((n, size, size, 3), np.uint8)
    head = _local_header(b"arr_0.npy", 0, len(npy) + n * size * size * 3) + npy
    path = tmp_path / "big.npz"
    with open(path, "w+b") as f:
        f.write(head)
        f.truncate(len(head) + n * size * size * 3)  # a hole: no disk blocks, reads as zeros
        f.seek(0, os.SEEK_END)
        _finish(f, 0, len(npy) + n * size * size * 3, np.arange(n) % 1000)
    if os.stat(path).st_blocks * 512 > 1 << 28:
        pytest.skip("this filesystem has no sparse files")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    images, labels = open_dataset(path, 128)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert isinstance(images, np.memmap) and images.shape == (n, 128, 128, 3)
    assert labels.tolist()[-3:] == [(n - 3) % 1000, (n - 2) % 1000, (n - 1) % 1000]
    assert grown_mb < 200, f"opening grew the process by {grown_mb:.0f} MB"
    assert int(images[[7, n - 1]].sum()) == 0


def test_bad_inputs_stop_with_one_clear_error(tmp_path, capsys):
    x, y = np.zeros((3, 8, 8, 3), np.uint8), np.zeros(3, np.int64)
    np.savez_compressed(tmp_path / "c.npz", arr_0=x, arr_1=y)
    with pytest.raises(DataError, match="compressed, so it cannot be memory-mapped"):
        open_dataset(tmp_path / "c.npz")
    save_npz(tmp_path / "ok.npz", x, y)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:300])
    with pytest.raises(DataError, match="cannot read dataset"):
        open_dataset(tmp_path / "cut.npz")
    with pytest.raises(DataError, match="8x8 but the model preset expects 16x16"):
        open_dataset(tmp_path / "ok.npz", 16)
    loose = tmp_path / "flat"
    loose.mkdir()
    Image.fromarray(x[0]).save(loose / "n01_1.JPEG")
    with pytest.raises(DataError, match="not inside a class folder"):
        prepare_folder(loose, 8, tmp_path / "o.npz", progress=False)
    bad = tmp_path / "bad" / "n01"
    bad.mkdir(parents=True)
    Image.fromarray(x[0]).save(bad / "n01_0.JPEG")
    (bad / "n01_1.JPEG").write_bytes(b"garbage")
    rc = cli.main(
        [
            "prepare-data",
            "--dataset",
            "imagenet",
            "--data-dir",
            str(bad.parent),
            "--image-size",
            "8",
            "--out-train",
            str(tmp_path / "prepared.npz"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "cannot read image" in err and "n01_1.JPEG" in err
    assert not list(tmp_path.glob("*prepared*"))  # no partial file, no marker, no output


def test_cli_prepares_imagenet_folder_and_records_classes(folder, clean, tmp_path):
    rc = cli.main(
        [
            "prepare-data",
            "--dataset",
            "imagenet",
            "--data-dir",
            str(folder),
            "--image-size",
            "16",
            "--out-train",
            str(tmp_path / "train.npz"),
            "--out-heldout",
            str(tmp_path / "heldout.npz"),
            "--heldout-fraction",
            "0.25",
            "--seed",
            "3",
            "--threads",
            "2",
            "--no-progress",
        ]
    )
    assert rc == 0 and _sha(tmp_path / "train.npz") == _sha(clean / "train.npz")
    info = json.loads((tmp_path / "train.json").read_text())
    assert info["classes"] == sorted(SYNSETS) and info["n_train"] + info["n_heldout"] == 22
