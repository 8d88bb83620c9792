"""Checkpoints: OpenAI-format round trips, atomic writes, and clear errors for files that do not fit."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from adm import cli
from adm.nets.checkpoints import CheckpointError, atomic_torch_save, load_model, save_model, sidecar_path
from adm.nets.classifier import Classifier
from adm.nets.config import UNetConfig
from adm.nets.presets import CLASSIFIER_PRESETS, DIFFUSION_PRESETS, UNET_PRESETS
from adm.nets.unet import UNet

torch.set_num_threads(1)

TINY = UNET_PRESETS["tiny-test"]
TINY_CLASSIFIER = CLASSIFIER_PRESETS["tiny-test-classifier"]


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero weights everywhere, so a round trip that drops a tensor would show."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def test_round_trip_with_json_beside(tmp_path):
    model = trained_like(UNet(TINY))
    path = tmp_path / "ema.pt"
    save_model(model, TINY, path, diffusion=DIFFUSION_PRESETS["tiny-test"])
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["kind"] == "unet" and meta["diffusion"]["noise_schedule"] == "linear"
    loaded, cfg = load_model(path)
    assert cfg == TINY and not loaded.training
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 500]), torch.tensor([2, 3])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
    # the file is a plain state_dict with OpenAI key names
    state = torch.load(path, weights_only=True)
    assert list(state) == list(model.state_dict()) and "time_embed.0.weight" in state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.json", "ema.pt"]  # no temporary leftovers


def test_openai_style_file_needs_config_or_preset(tmp_path):
    model = trained_like(Classifier(TINY_CLASSIFIER))
    path = tmp_path / "classifier.pt"
    torch.save(model.state_dict(), path)  # as OpenAI ships them: no JSON
    with pytest.raises(CheckpointError, match="classifier.pt.*no classifier.json"):
        load_model(path)
    loaded, cfg = load_model(path, cfg="tiny-test-classifier", expect_kind="classifier")
    assert cfg == TINY_CLASSIFIER
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 999])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))
    loaded, _ = load_model(path, cfg=TINY_CLASSIFIER)
    assert isinstance(loaded, Classifier)


def test_fp16_weights_load_as_float32(tmp_path):
    model = trained_like(UNet(TINY))
    path = tmp_path / "half.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    loaded, _ = load_model(path, cfg=TINY)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_classifier_weights_loaded_as_unet_fail_clearly(tmp_path):
    path = tmp_path / "classifier.pt"
    save_model(Classifier(TINY_CLASSIFIER), TINY_CLASSIFIER, path)
    with pytest.raises(CheckpointError, match="classifier.pt.*expected a unet checkpoint"):
        load_model(path, expect_kind="unet")
    with pytest.raises(
        CheckpointError,
        match=r"classifier.pt: weights do not fit a unet.*missing key.*"
        r"(label_emb|output_blocks)",
    ) as err:
        load_model(path, cfg=TINY)
    assert "unexpected key" in str(err.value) and "out.2.positional_embedding" in str(err.value)


def test_shape_mismatch_names_the_key(tmp_path):
    path = tmp_path / "wide.pt"
    save_model(UNet(TINY), TINY, path)
    narrow = UNetConfig(**{**TINY.__dict__, "num_classes": 5})
    with pytest.raises(CheckpointError, match=r"shape of label_emb.weight: file \(10, 128\) vs model \(5, 128\)"):
        load_model(path, cfg=narrow)


def test_truncated_and_missing_files_fail_clearly(tmp_path):
    path = tmp_path / "model.pt"
    save_model(UNet(TINY), TINY, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt: not a readable weights-only checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "absent.pt", cfg=TINY)


class _Evil:
    """A pickle that runs a shell command when unpickled (what a hostile 'checkpoint' would hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_in_one_line_without_running_code(tmp_path, capsys):
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    torch.save({"weights": torch.zeros(1), "extra": _Evil(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, cfg=TINY)
    msg = str(err.value)
    assert not marker.exists() and "evil.pt: refused" in msg
    assert "\n" not in msg and "weights_only=False" not in msg  # torch's advice is never passed on
    rc = cli.main(
        [
            "sample",
            "--model",
            str(path),
            "--model-preset",
            "tiny-test",
            "--num-samples",
            "1",
            "--out",
            str(tmp_path / "o.npz"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "weights_only" not in err and not marker.exists()


def test_html_page_saved_as_checkpoint_is_named_as_such(tmp_path):
    """A sign-in page saved under a .pt name: torch calls it "Python objects other than tensors"."""
    path = tmp_path / "page.pt"
    path.write_text("\n  <!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")
    with pytest.raises(CheckpointError) as err:
        load_model(path, cfg=TINY)
    msg = str(err.value)
    assert "page.pt: not a PyTorch checkpoint: it looks like an HTML page" in msg, msg
    assert "\n" not in msg and "other than tensors" not in msg


def test_missing_checkpoint_is_no_such_file_not_missing_json(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pt: no such checkpoint file"):
        load_model(tmp_path / "absent.pt")  # no cfg: the sidecar would be looked for first


def test_non_finite_weights_are_refused_at_load(tmp_path):
    model = trained_like(UNet(TINY))
    with torch.no_grad():
        model.out[2].weight[0, 0, 0, 0] = float("nan")
    save_model(model, TINY, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan.pt: weights are not finite \(NaN/inf in out.2.weight\)"):
        load_model(tmp_path / "nan.pt")


def test_outputs_have_umask_permissions_and_stale_temps_are_cleaned(tmp_path):
    from adm.data.datasets import save_npz
    from adm.fileio import TEMP_PREFIX, default_mode, write_json

    old = os.umask(0o027)
    try:
        stale = tmp_path / f"{TEMP_PREFIX}model.pt.abcd1234.tmp"  # as a kill during a save leaves it
        stale.write_bytes(b"half a checkpoint")
        foreign = tmp_path / ".model.pt.abcd1234.tmp"  # not ours: never touched
        foreign.write_bytes(b"")
        save_model(UNet(TINY), TINY, tmp_path / "model.pt")
        save_npz(tmp_path / "x.npz", np.zeros((1, 2, 2, 3), np.uint8), np.zeros(1))
        write_json(tmp_path / "x.json", {})
        assert default_mode() == 0o640
        for name in ("model.pt", "model.json", "x.npz", "x.json"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o640, name
        assert not stale.exists() and foreign.exists()
    finally:
        os.umask(old)


def test_bad_json_and_unknown_preset(tmp_path):
    path = tmp_path / "m.pt"
    save_model(UNet(TINY), TINY, path)
    sidecar_path(path).write_text(json.dumps({"kind": "unet", "config": {"image_size": 16, "bogus": 1}}))
    with pytest.raises(CheckpointError, match="m.json: bad config.*bogus"):
        load_model(path)
    with pytest.raises(CheckpointError, match="unknown model preset 'nope'"):
        load_model(path, cfg="nope")


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": torch.tensor(1)}, path)
    with pytest.raises(Exception):
        atomic_torch_save({"bad": lambda: 0}, path)  # lambdas cannot be pickled
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("file write failed\nmore")])
def test_checkpoint_write_failure_is_one_line_naming_what_was_kept(tmp_path, monkeypatch, error):
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": torch.tensor(1)}, path)

    def failing(obj, f, *args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", failing)
    for target, kept in (
        (path, "the previous state.pt is kept"),
        (tmp_path / "new.pt", "nothing was written under it"),
    ):
        with pytest.raises(OSError) as err:  # an OSError, so every program's handler prints it as one line
            atomic_torch_save({"step": torch.tensor(2)}, target)
        reason = "No space left on device" if isinstance(error, OSError) else "file write failed"
        assert str(err.value) == f"{target}: could not write the checkpoint ({reason}); {kept}"
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_weights_saved_by_openai_code_load_and_agree(tmp_path):
    """A state_dict written by OpenAI's own UNetModel loads through load_model and gives its outputs."""
    gd_unet = pytest.importorskip("guided_diffusion.unet")
    ref = gd_unet.UNetModel(
        image_size=16,
        in_channels=3,
        model_channels=32,
        out_channels=6,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 2),
        num_classes=10,
        num_head_channels=32,
        use_scale_shift_norm=True,
        resblock_updown=True,
    )
    trained_like(ref)
    path = tmp_path / "openai.pt"
    torch.save(ref.state_dict(), path)
    model, _ = load_model(path, cfg="tiny-test", expect_kind="unet")
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([7, 700]), torch.tensor([1, 9])
    with torch.no_grad():
        assert (model(x, t, y) - ref(x, t, y=y)).abs().max() <= 1e-5
