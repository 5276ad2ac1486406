"""thead._schema: the one strict decoder every on-disk format is read with, and each format's
files as thead's own writers make them: they round-trip, and an unknown key, a missing key, a
wrong type or a wrong nesting is ONE line naming the file and the key path, of the caller's
error type (and through the CLI, one ``error:`` line with no traceback)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from thead._schema import bounded, check_bounds, decode, optional, stored_as
from thead.config import LSRConfig
from thead.errors import AvatarError, CheckpointError, TheadError, UsageError, WeightsError

REPO = Path(__file__).resolve().parents[1]


# -- the decoder itself ---------------------------------------------------------------------

@dataclass(frozen=True)
class Inner:
    n: int
    ratio: float = bounded(1.0, 0.0, 2.0)

    def __post_init__(self) -> None:
        check_bounds(self, UsageError)
        if self.n == 13:
            raise UsageError("n must not be 13")


@dataclass(frozen=True)
class Outer:
    flag: bool
    mode: Literal["a", "b"]
    inner: Inner
    items: tuple[Inner, ...]
    pair: tuple[int, str]
    table: dict[str, int]
    note: str | None = optional(None)
    extra: dict[str, Any] = optional(default_factory=dict)
    size: tuple[int, int] = stored_as(str, lambda s: tuple(int(p) for p in s.split("x")), default=(1, 1))


GOOD = {"flag": True, "mode": "a", "inner": {"n": 1, "ratio": 0.5}, "items": [{"n": 2, "ratio": 1}],
        "pair": [3, "x"], "table": {"k": 4}, "size": "5x6"}


def _fails(data, message, error=TheadError, cls=Outer):
    with pytest.raises(error) as e:
        decode(cls, data, error=error, source="f.json")
    text = str(e.value)
    assert type(e.value) is error and "\n" not in text
    assert text == f"f.json: {message}", text


def _with(**changes):
    return {**GOOD, **changes}


def test_a_good_object_decodes_exactly():
    out = decode(Outer, GOOD, error=TheadError, source="f.json")
    assert out == Outer(True, "a", Inner(1, 0.5), (Inner(2, 1.0),), (3, "x"), {"k": 4}, None, {}, (5, 6))
    assert type(out.items[0].ratio) is float  # an int is accepted for a float, as a float
    assert decode(Outer, _with(note="hi", extra={"any": [1, {"x": None}]}), error=TheadError).extra == {"any": [1, {"x": None}]}


@pytest.mark.parametrize(("data", "message"), [
    (_with(flag=1), "flag: expected a bool, got 1"),
    (_with(inner={"n": True, "ratio": 1.0}), "inner.n: expected an int, got true"),
    (_with(inner={"n": "1", "ratio": 1.0}), 'inner.n: expected an int, got "1"'),
    (_with(inner={"n": 1.0, "ratio": 1.0}), "inner.n: expected an int, got 1.0"),
    (_with(inner={"n": 1, "ratio": "0.5"}), 'inner.ratio: expected a number, got "0.5"'),
    (_with(inner={"n": 1, "ratio": float("nan")}), "inner.ratio: expected a finite number, got NaN"),
    (_with(inner={"n": 1, "ratio": 3}), "inner.ratio: must be a number from 0 to 2, got 3.0"),
    (_with(inner={"n": 1, "ratio": 10**400}), "inner.ratio: expected a finite number, got 1" + "0" * 38 + "…"),
    (_with(mode="c"), 'mode: expected one of "a", "b", got "c"'),
    (_with(inner=[1]), "inner: expected an object, got [1]"),
    (_with(items={"n": 1}), 'items: expected an array, got {"n": 1}'),
    (_with(items=[{"n": 1, "ratio": 1, "oops": 0}]), "items.0.oops: unknown key; expected one of: n, ratio"),
    (_with(pair=[1]), "pair: expected an array of 2, got 1 items"),
    (_with(pair=[1, 2]), "pair.1: expected a string, got 2"),
    (_with(table={"k": "4"}), 'table.k: expected an int, got "4"'),
    (_with(note=3), "note: expected a string or null, got 3"),
    (_with(size="5by6"), "size: invalid literal for int() with base 10: '5by6'"),
    (_with(inner={"n": 13, "ratio": 1}), "inner: n must not be 13"),
    ({k: v for k, v in GOOD.items() if k != "mode"}, "mode: missing"),
    ({**GOOD, "inner": {"ratio": 1.0}}, "inner.n: missing"),
    ({**GOOD, "inner": {"n": 1}}, "inner.ratio: missing"),  # a constructor default does not make a key optional
    (_with(surprise=1, another=2), "another: unknown key (and 1 more); expected one of: flag, mode, inner, items, pair, table, note, extra, size"),
    ([GOOD], 'expected an object, got [{"flag": true, "mode": "a", "inner": {…'),
])
def test_every_mistake_is_one_line_naming_the_key(data, message):
    _fails(data, message, error=WeightsError)


def test_a_hostile_key_or_value_still_gives_one_short_line():
    for data in (_with(**{"a\nb" * 1000: 1}), _with(table={"k\n" * 10**5: "1"}), _with(inner={"n": "x\n" * 10**6, "ratio": 1})):
        with pytest.raises(WeightsError) as e:
            decode(Outer, data, error=WeightsError, source="f.json")
        assert "\n" not in str(e.value) and len(str(e.value)) < 250, str(e.value)[:300]


def test_the_callers_error_type_and_a_path_prefix():
    with pytest.raises(AvatarError, match=r"^a.json: outer.inner.n: expected an int, got null$"):
        decode(Outer, _with(inner={"n": None, "ratio": 1}), error=AvatarError, source="a.json", path="outer")
    with pytest.raises(CheckpointError, match=r"^inner.n: missing$"):  # no source: the caller adds the file
        decode(Outer, _with(inner={}), error=CheckpointError)


def test_bounds_hold_for_objects_built_in_code_too():
    with pytest.raises(UsageError, match=r"^ratio: must be a number from 0 to 2, got 5$"):
        Inner(1, 5)
    with pytest.raises(UsageError, match=r"^ratio: must be a number from 0 to 2, got True$"):
        Inner(1, True)


def test_text_mode_parses_numbers_from_their_decimal_text():
    @dataclass(frozen=True)
    class Meta:
        k: int
        scale: float
        name: str

    assert decode(Meta, {"k": "12", "scale": "0.25", "name": "7"}, error=TheadError, text=True) == Meta(12, 0.25, "7")
    for data, message in [({"k": "1.5", "scale": "1", "name": "x"}, 'k: expected an int, got "1.5"'),
                          ({"k": "1", "scale": "one", "name": "x"}, 'scale: expected a number, got "one"'),
                          ({"k": "1", "scale": "inf", "name": "x"}, "scale: expected a finite number, got Infinity"),
                          ({"k": " 1", "scale": "1", "name": "x"}, 'k: expected an int, got " 1"'),
                          ({"k": "1", "scale": "1_0", "name": "x"}, 'scale: expected a number, got "1_0"')]:
        with pytest.raises(TheadError) as e:
            decode(Meta, data, error=TheadError, text=True)
        assert str(e.value) == message
    with pytest.raises(TheadError, match='expected an int, got "12"'):  # not without text=True
        decode(Meta, {"k": "12", "scale": 1.0, "name": "x"}, error=TheadError)


# -- config.json ----------------------------------------------------------------------------

def test_config_json_written_by_thead_round_trips(random_lsr_weights, parity_weights):
    from thead.model import LSR

    for folder in (random_lsr_weights, parity_weights):  # save_pretrained's and the converter's
        text = (folder / "config.json").read_text()
        config = LSRConfig.from_json(text, source="config.json")
        assert config.to_json() == text
    assert LSR.from_pretrained(random_lsr_weights).config == LSRConfig.reduced()
    assert LSRConfig.from_json(LSRConfig().to_json()) == LSRConfig()


def _bad_config_folder(tmp_path, random_lsr_weights, edit) -> Path:
    folder = tmp_path / "w"
    folder.mkdir()
    d = json.loads((random_lsr_weights / "config.json").read_text())
    edit(d)
    (folder / "config.json").write_text(json.dumps(d))
    os.link(random_lsr_weights / "model.safetensors", folder / "model.safetensors")
    return folder


CONFIG_EDITS = {
    "unknown key": (lambda d: d["image_generator"].update(spade_hiden=3), "image_generator.spade_hiden: unknown key; expected one of: nf, nf_max, num_upsamples, z_dim, num_classes, spade_hidden, seed_size, out_channels"),
    "missing key": (lambda d: d["style_encoder"].pop("z_dim"), "style_encoder.z_dim: missing"),
    "bool for int": (lambda d: d["discriminator"].update(nf=True), "discriminator.nf: expected an int, got true"),
    "string for number": (lambda d: d["image_generator"].update(nf="32"), 'image_generator.nf: expected an int, got "32"'),
    "wrong nesting": (lambda d: d["image_generator"].update(d.pop("discriminator")), "image_generator.in_channels: unknown key (and 1 more); expected one of: nf, nf_max, num_upsamples, z_dim, num_classes, spade_hidden, seed_size, out_channels"),
    "flattened sub-config": (lambda d: d.update(layout_encoder=[4, 48, 64]), "layout_encoder: expected an object, got [4, 48, 64]"),
}


@pytest.mark.parametrize("case", list(CONFIG_EDITS))
def test_config_json_mistakes_are_one_weights_error_line(tmp_path, random_lsr_weights, case):
    from thead.hub import summarize_weights
    from thead.model import LSR

    edit, message = CONFIG_EDITS[case]
    folder = _bad_config_folder(tmp_path, random_lsr_weights, edit)
    for load in (LSR.from_pretrained, summarize_weights):  # building the model, and thead weights info
        with pytest.raises(WeightsError) as e:
            load(folder)
        assert str(e.value) == f"{folder / 'config.json'}: {message}"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "THEAD_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "thead", *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_says_one_error_line_for_a_bad_config_json(tmp_path, random_lsr_weights):
    folder = _bad_config_folder(tmp_path, random_lsr_weights, lambda d: d["layout_generator"].update(num_levels="5"))
    r = _cli("weights", "info", "--weights", str(folder))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == f'error: {folder / "config.json"}: layout_generator.num_levels: expected an int, got "5"', r.stderr
    assert "Traceback" not in r.stderr + r.stdout


# -- avatar metadata --------------------------------------------------------------------------

@pytest.fixture
def avatar_store(tmp_path, sample_dir):
    from tests.test_avatar import make_avatar
    from thead.avatar import AvatarStore

    store = AvatarStore(tmp_path / "home" / "avatars")
    store.save(make_avatar(sample_dir, "alice"))
    return store


def _rewrite_metadata(path: Path, edit) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    edit(meta)
    save_file(tensors, str(path), metadata=meta)


def test_avatar_metadata_written_by_thead_round_trips(avatar_store, sample_dir):
    from tests.test_avatar import make_avatar

    assert avatar_store.info("alice") == make_avatar(sample_dir, "alice").info
    # an avatar without the "weights" key (the one optional key) reads it as ""
    _rewrite_metadata(avatar_store.path("alice"), lambda m: m.pop("weights"))
    assert avatar_store.load("alice").info.weights == ""


AVATAR_EDITS = {
    "unknown key": (lambda m: m.update(colour="blue"), "colour: unknown key"),
    "missing key": (lambda m: m.pop("z_dim"), "z_dim: missing"),
    "string for number": (lambda m: m.update(crop_scale="wide"), 'crop_scale: expected a number, got "wide"'),
    "float for int": (lambda m: m.update(num_shots="2.0"), 'num_shots: expected an int, got "2.0"'),
    "wrong nesting of the size": (lambda m: m.update(photo_size="[224, 224]"), "photo_size: expected \"WIDTHxHEIGHT\", got '[224, 224]'"),
}


@pytest.mark.parametrize("case", list(AVATAR_EDITS))
def test_avatar_metadata_mistakes_are_one_avatar_error_line(avatar_store, case):
    edit, message = AVATAR_EDITS[case]
    path = avatar_store.path("alice")
    _rewrite_metadata(path, edit)
    for read in (avatar_store.info, avatar_store.load):
        with pytest.raises(AvatarError) as e:
            read("alice")
        assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value), str(e.value)


def test_cli_says_one_error_line_for_bad_avatar_metadata(avatar_store):
    path = avatar_store.path("alice")
    _rewrite_metadata(path, lambda m: m.update(z_dim="sixty-four"))
    r = _cli("avatars", "show", "alice", env={"THEAD_HOME": str(avatar_store.root.parent)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == f'error: {path}: z_dim: expected an int, got "sixty-four"', r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_personal_weights_metadata_round_trips_and_is_strict(avatar_store):
    state = {"image_generator.x": torch.ones(2)}
    path = avatar_store.save_finetuned("alice", state)
    personal = avatar_store.load_finetuned("alice")
    assert personal.base_weights_sha256 == avatar_store.info("alice").weights_sha256 and torch.equal(personal.state["image_generator.x"], state["image_generator.x"])
    _rewrite_metadata(path, lambda m: m.pop("created"))  # the one optional key
    assert avatar_store.load_finetuned("alice").created == ""
    for edit, message in [(lambda m: m.update(steps="10"), "steps: unknown key"),
                          (lambda m: m.update(format="thead-avatar"), 'format: expected one of "thead-avatar-finetuned", got "thead-avatar"')]:
        avatar_store.save_finetuned("alice", state)
        _rewrite_metadata(path, edit)
        with pytest.raises(AvatarError) as e:
            avatar_store.load_finetuned("alice")
        assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


# -- trainer state ----------------------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path, random_lsr_weights):
    from thead.train.checkpoint import TrainState, save_checkpoint
    from thead.train.config import meta_learning

    state = TrainState(7, 28, 28, 1, meta_learning("learned_segmentation", batch_size=4).to_dict(), skipped_files=1, extra={"note": [1, 2]})
    weights = load_file(str(random_lsr_weights / "model.safetensors"))
    return save_checkpoint(tmp_path / "run", state, LSRConfig.reduced(), weights, {"adam/m": torch.zeros(3)}), state


def _edit_state(path: Path, edit) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def test_a_checkpoint_written_by_thead_round_trips(checkpoint):
    from thead.train.checkpoint import load_checkpoint
    from thead.train.config import TrainConfig, meta_learning

    path, state = checkpoint
    ckpt = load_checkpoint(path.parent.parent)
    assert ckpt.state == state and ckpt.model_config == LSRConfig.reduced()
    assert TrainConfig.from_dict(ckpt.state.train_config) == meta_learning("learned_segmentation", batch_size=4)
    # the keys TrainState(**raw) never required stay optional, with their declared defaults
    _edit_state(path / "state.json", lambda d: [d.pop(k) for k in ("skipped_files", "init_from", "start_step", "extra")])
    assert dataclasses.replace(load_checkpoint(path).state, skipped_files=1, extra={"note": [1, 2]}) == state


STATE_EDITS = {
    "unknown key": (lambda d: d.update(epoch=3), "epoch: unknown key"),
    "missing key": (lambda d: d.pop("position"), "position: missing"),
    "missing train_config key (no silent default)": (lambda d: d["train_config"]["weights"].pop("gan"), "train_config.weights.gan: missing"),
    "bool for int": (lambda d: d["train_config"].update(num_shots=True), "train_config.num_shots: expected an int, got true"),
    "string for number": (lambda d: d["train_config"]["optimizer"].update(lr="0.001"), 'train_config.optimizer.lr: expected a number, got "0.001"'),
    "wrong nesting": (lambda d: d["train_config"].update(lr=d["train_config"].pop("optimizer")["lr"]), "train_config.lr: unknown key"),
    "unknown stage": (lambda d: d["train_config"].update(stage="finetune"), 'train_config.stage: expected one of "layout", "meta", got "finetune"'),
    "the config's own rule": (lambda d: d["train_config"].update(num_shots=10), "train_config: num_shots must be 1..9"),
}


@pytest.mark.parametrize("case", list(STATE_EDITS))
def test_trainer_state_mistakes_are_one_checkpoint_error_line(checkpoint, case):
    from thead.train.checkpoint import load_checkpoint

    path, _ = checkpoint
    edit, message = STATE_EDITS[case]
    _edit_state(path / "state.json", edit)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path / 'state.json'}: {message}") and "\n" not in str(e.value), str(e.value)


def test_a_checkpoints_config_json_is_read_strictly_too(checkpoint):
    from thead.train.checkpoint import load_checkpoint

    path, _ = checkpoint
    _edit_state(path / "config.json", lambda d: d["discriminator"].update(nf=4.5))
    with pytest.raises(CheckpointError, match=rf"^{path / 'config.json'}: discriminator.nf: expected an int, got 4.5$"):
        load_checkpoint(path)


# -- the weights manifest ---------------------------------------------------------------------

def test_the_repositorys_manifest_and_a_written_one_round_trip(random_lsr_weights, tmp_path):
    from thead import hub

    entries = hub.read_manifest(REPO / "weights" / "manifest.json")
    assert [e.repo_id for e in entries] == [hub.DEFAULT_REPO_ID] and not entries[0].pinned
    made = hub.make_entry(random_lsr_weights, "me/tiny", provenance="a test")
    path = hub.write_manifest(tmp_path / "manifest.json", [*entries, made])
    assert hub.read_manifest(path) == [*entries, made]
    # an entry with only the two required keys: the rest read as their declared defaults
    path.write_text(json.dumps({"format_version": 1, "weights": [{"name": "x", "repo_id": "a/b"}]}))
    assert hub.read_manifest(path) == [hub.WeightsEntry(name="x", repo_id="a/b")]


MANIFEST_EDITS = {
    "unknown key": (lambda d: d["weights"][0].update(licence="MIT"), "weights.0.licence: unknown key; expected one of: name, repo_id, revision, description, provenance, license, source_url, files, archive_sha256"),
    "missing key": (lambda d: d["weights"][0].pop("repo_id"), "weights.0.repo_id: missing"),
    "bool for int": (lambda d: d["weights"][0]["files"]["config.json"].update(size=True), "weights.0.files.config.json.size: expected an int or null, got true"),
    "string for number": (lambda d: d["weights"][0]["files"]["config.json"].update(size="12"), 'weights.0.files.config.json.size: expected an int or null, got "12"'),
    "wrong nesting": (lambda d: d["weights"][0].update(files=[{"name": "config.json"}]), 'weights.0.files: expected an object, got [{"name": "config.json"}]'),
    "entries not a list": (lambda d: d.update(weights=d["weights"][0]), 'weights: expected an array, got {"name": "lsr-voxceleb2", "repo_id": "t…'),
}


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_manifest_mistakes_are_one_weights_error_line(tmp_path, case):
    from thead import hub

    edit, message = MANIFEST_EDITS[case]
    d = json.loads((REPO / "weights" / "manifest.json").read_text())
    edit(d)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(d))
    with pytest.raises(WeightsError) as e:
        hub.read_manifest(path)
    assert str(e.value) == f"{path}: {message}"


# -- provenance.json and trust.json -----------------------------------------------------------

def _provenance(**changes):
    from thead.release import WeightsProvenance

    return WeightsProvenance(**{"source_url": "https://example.org/r.tar.gz", "archive_sha256": "ab" * 32, "archive_size": 123,
                                "checkpoint": "run/ckpt-0", "converted_sha256": {"config.json": "cd" * 32}, "parameters": 1_100_000,
                                "date": "2026-01-01T00:00:00+00:00", "thead_version": "0.1.0", **changes})


PROVENANCE_EDITS = {
    "unknown key": (lambda d: d.update(mirror="x"), "mirror: unknown key"),
    "missing key": (lambda d: d.pop("archive_sha256"), "archive_sha256: missing"),
    "bool for int": (lambda d: d.update(parameters=False), "parameters: expected an int, got false"),
    "string for number": (lambda d: d.update(archive_size="123"), 'archive_size: expected an int, got "123"'),
    "wrong nesting": (lambda d: d.update(converted_sha256=["cd" * 32]), "converted_sha256: expected an object, got [\"cdcdcdcd"),
}


@pytest.mark.parametrize("case", list(PROVENANCE_EDITS))
def test_provenance_round_trips_and_mistakes_are_one_line(tmp_path, case):
    from thead import release

    release._write_provenance(tmp_path, _provenance())  # the writer release_weights() uses
    assert release.read_provenance(tmp_path) == _provenance()
    assert release.read_provenance(tmp_path / "elsewhere") is None  # none: not converted by thead
    edit, message = PROVENANCE_EDITS[case]
    path = tmp_path / release.PROVENANCE_NAME
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    with pytest.raises(WeightsError) as e:
        release.read_provenance(tmp_path)
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value)


def test_a_testsets_provenance_says_where_its_parts_are(tmp_path):
    from thead import release
    from thead.errors import DatasetError

    record = release.TestsetProvenance("https://example.org/t.zip", "ab" * 32, 9, "subset/test", None, "2026-01-01")
    release._write_provenance(tmp_path, record)
    assert release.testset_paths(tmp_path) == (tmp_path / "subset/test", None)
    release._write_provenance(tmp_path, dataclasses.replace(record, outputs="fsth_outputs"))
    assert release.testset_paths(tmp_path) == (tmp_path / "subset/test", tmp_path / "fsth_outputs")
    (tmp_path / release.PROVENANCE_NAME).write_text(json.dumps({**dataclasses.asdict(record), "outputs": 3}))
    with pytest.raises(DatasetError, match=r"provenance.json: outputs: expected a string or null, got 3$"):
        release.testset_paths(tmp_path)


def test_the_trust_file_round_trips_and_a_damaged_one_is_never_trusted_anew(tmp_path, monkeypatch):
    from thead.download import DownloadError, record_sha256, recorded_sha256

    monkeypatch.setenv("THEAD_CACHE", str(tmp_path))
    url, other = "https://example.org/a.tar.gz", "https://example.org/b.zip"
    assert recorded_sha256(url) is None
    record_sha256(url, "ab" * 32)
    record_sha256(other, "cd" * 32)
    record_sha256(url, "ef" * 32)  # the first download's hash stays
    assert (recorded_sha256(url), recorded_sha256(other)) == ("ab" * 32, "cd" * 32)
    trust = tmp_path / "trust.json"
    good = json.loads(trust.read_text())
    for edit, message in [(lambda d: d[url].update(sha256=None), f"{url}.sha256: expected a string, got null"),
                          (lambda d: d[url].pop("first_seen"), f"{url}.first_seen: missing"),
                          (lambda d: d.update({other: "cd" * 32}), f'{other}: expected an object, got "cdcdcd'),
                          (lambda d: d[url].update(size=1), f"{url}.size: unknown key")]:
        d = json.loads(json.dumps(good))
        edit(d)
        trust.write_text(json.dumps(d))
        for call in (lambda: recorded_sha256(url), lambda: record_sha256("https://example.org/new", "00" * 32)):
            with pytest.raises(DownloadError) as e:
                call()
            assert str(e.value).startswith(f"{trust}: {message}") and "\n" not in str(e.value)
        assert json.loads(trust.read_text()) == d  # left as it was, not rewritten from scratch
