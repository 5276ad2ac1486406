"""`thead train layout|meta|export` through the CLI entry point, on the real sample identity."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.train.helpers import tiny_loss_networks
from thead.cli import main
from thead.model import LSR


@pytest.fixture(scope="module")
def loss_files(tmp_path_factory):
    """Tiny random VGG19 / VGG-Face in thead's converted format (the real ones cannot be
    downloaded here; the loader reads the widths from the file)."""
    folder = tmp_path_factory.mktemp("vgg")
    nets = tiny_loss_networks()
    save_file(nets.vgg19.state_dict(), str(folder / "vgg19.safetensors"))
    save_file(nets.vgg_face.state_dict(), str(folder / "vgg_face.safetensors"))
    return folder / "vgg19.safetensors", folder / "vgg_face.safetensors"


@pytest.mark.slow
def test_layout_then_meta_then_export(sample_dir, loss_files, tmp_path, capsys):
    data = sample_dir / "fsth_eval_subset_processed"
    v19, vf = loss_files
    common = ["--data", str(data), "--steps", "1", "--batch-size", "1", "--workers", "0", "--vgg19", str(v19), "--index", str(tmp_path / "i.npz")]
    assert main(["train", "layout", *common, "--out", str(tmp_path / "A"), "--model-size", "reduced"]) == 0
    assert main(["train", "meta", *common, "--vgg-face", str(vf), "--init", str(tmp_path / "A"), "--out", str(tmp_path / "B")]) == 0
    assert "step 2: checkpoint" in capsys.readouterr().out
    assert main(["train", "export", str(tmp_path / "B"), "-o", str(tmp_path / "weights")]) == 0
    model = LSR.from_pretrained(tmp_path / "weights")  # what `thead animate --weights` loads
    assert model.config.z_dim == 64
    with torch.no_grad():
        out = model.render(torch.zeros(1, 3, 224, 224), model.prepare(model.encode(torch.zeros(1, 1, 3, 224, 224), torch.zeros(1, 1, 3, 224, 224))))
    assert torch.isfinite(out.image).all()

    assert main(["train", "export", str(tmp_path / "B"), "-o", str(tmp_path / "weights")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_bad_data_is_one_line(sample_dir, loss_files, tmp_path, capsys):
    code = main(["train", "layout", "--data", str(sample_dir / "fsth_eval_subset"), "--out", str(tmp_path / "A"),
                 "--vgg19", str(loss_files[0]), "--index", str(tmp_path / "i.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "run `thead prep` first" in err and "Traceback" not in err
    assert main(["train", "export", str(tmp_path / "nothing"), "-o", str(tmp_path / "w")]) == 1
    assert "neither a training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_finetune_command_stores_personal_weights(parity_weights, sample_dir, loss_files, tmp_path, monkeypatch, capsys):
    """An avatar enrolled (dlib) from id00017's train frames with the converted parity weights,
    fine-tuned 2 steps; animate then finds the personal weights for these base weights."""
    from thead.avatar import AvatarStore
    from thead.enroll import EnrollOptions, enroll

    monkeypatch.setenv("THEAD_HOME", str(tmp_path / "home"))
    source = sample_dir / "fsth_eval_subset" / "train" / "id00017" / "OLguY5ofUrY" / "combined"
    enroll(source, "alice", EnrollOptions(num_shots=2, landmarks="dlib", device="cpu"), weights=parity_weights)
    code = main(["finetune", "alice", "--steps", "2", "--device", "cpu", "--vgg19", str(loss_files[0]), "--vgg-face", str(loss_files[1])])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 steps on its 2 shots on the CPU" in captured.err and "min on this CPU" in captured.err
    personal = AvatarStore().load_finetuned("alice")
    model = LSR.from_pretrained(parity_weights)
    assert personal.base_weights_sha256 == model.weights_sha256
    assert {k.split(".")[0] for k in personal.state} == {"layout_generator", "image_generator", "discriminator"}
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in personal.state.items())
    assert main(["finetune", "bob", "--steps", "1"]) == 1  # unknown avatar: one line
