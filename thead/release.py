"""The authors' public release, fetched and converted on first use.

Two archives on Google Drive, linked from the authors' README (github.com/MoustafaMeshry/lsr):

- ``WEIGHTS``: the meta-learned VoxCeleb2 checkpoint (TF2; ``_trained_models/meta_learning/...``
  inside). ``release_weights()`` downloads it (``thead.download``), extracts it (zip, tar,
  tar.gz; nested folders), picks the checkpoint (a ``meta_learning`` folder first; in a folder,
  the one its ``checkpoint`` state file names, else the newest), converts it with
  ``thead.convert`` and caches ``config.json`` + ``model.safetensors`` + ``provenance.json``
  (source URL, archive sha256, converted sha256s, date, thead version) in
  ``cache_root()/weights/lsr-voxceleb2``. The archive is then deleted unless ``keep_archive``.
- ``TESTSET``: the evaluation subset (the FSTH layout of ``thead.eval``; with the authors'
  precomputed outputs when the archive carries them), cached extracted in
  ``cache_root()/testsets/voxceleb``.

Trust: Drive publishes no checksum. The archive's sha256 is printed, compared with a pin in
``weights/manifest.json`` (``archive_sha256`` of the entry) when there is one, else with the
sha256 recorded the first time that URL was downloaded (``cache_root()/trust.json``, ``thead.download``);
a different archive is refused. ``$THEAD_RELEASE_URL`` / ``$THEAD_TESTSET_URL`` replace the
URLs (any http(s) URL or a Drive link).

Failures are one line naming the manual route (browser download, then
``thead weights convert``), and the cache never holds a half-written or unconverted model:
conversion writes into a temporary folder that is renamed only when complete. A broken
transfer is kept as a partial file and resumed by the next run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from thead.download import (
    OFFLINE_ENVS,
    DownloadError,
    cache_root,
    check_recorded,
    fetch,
    offline,
    partial_files,
    record_sha256,
    remove_cached,
    stderr_display,
)
from thead._schema import decode
from thead.errors import CheckpointError, DatasetError, OutputError, TheadError, WeightsError
from thead.progress import Progress

__all__ = [
    "ReleaseAsset",
    "WEIGHTS",
    "TESTSET",
    "PROVENANCE_NAME",
    "release_url",
    "cached_release_weights",
    "release_weights",
    "weights_from_archive",
    "read_provenance",
    "WeightsProvenance",
    "TestsetProvenance",
    "cached_testset",
    "release_testset",
    "find_fsth_layout",
    "CONVERT_S_PER_GB",
]

PROVENANCE_NAME = "provenance.json"
#: Seconds of conversion per GB of checkpoint, rounded up from benchmarks/convert_bench.py
#: (full-size checkpoint with Adam slots, 1.18 GB: 2.5 s/GB on 2 heavily loaded cores). Used
#: for the estimate printed before a long download.
CONVERT_S_PER_GB = 3.0


@dataclass(frozen=True)
class ReleaseAsset:
    name: str
    drive_id: str
    env: str
    what: str

    @property
    def page(self) -> str:
        return f"https://drive.google.com/file/d/{self.drive_id}/view"

    @property
    def default_url(self) -> str:
        return f"https://drive.google.com/uc?id={self.drive_id}"


WEIGHTS = ReleaseAsset("lsr-voxceleb2", "1PXRdeKgEIBsPeoMjFJcIZq00V_1RitJZ", "THEAD_RELEASE_URL",
                       "the authors' LSR checkpoint (meta-learned on VoxCeleb2)")
TESTSET = ReleaseAsset("voxceleb-eval-subset", "1ndtq5GNI1Flglm2XvePgdhQ74Zl36YLh", "THEAD_TESTSET_URL",
                       "the authors' VoxCeleb2 evaluation subset")


def release_url(asset: ReleaseAsset) -> str:
    return os.environ.get(asset.env, "").strip() or asset.default_url


def _manual_weights(url: str) -> str:
    return (f"download {url if 'drive.google' not in url else WEIGHTS.page} in a browser, then "
            "`thead weights convert <the archive> -o DIR` and pass --weights DIR")


def _manual_testset(url: str) -> str:
    return (f"download {url if 'drive.google' not in url else TESTSET.page} in a browser, extract it and pass "
            "--testset FOLDER (or set $THEAD_VOXCELEB_FSTH)")


# ------------------------------------------------------------------------------- trust


def _pinned_archive_sha256(asset: ReleaseAsset, url: str) -> str | None:
    if url != asset.default_url or asset is not WEIGHTS:
        return None
    from thead.hub import DEFAULT_REPO_ID, known_entry

    entry = known_entry(DEFAULT_REPO_ID)
    return entry.archive_sha256 if entry is not None else None


def _check_trust(asset: ReleaseAsset, url: str, sha256: str, manual: str) -> str:
    """'pinned', 'recorded' (matches the first download) or 'first' (nothing to compare yet)."""
    pinned = _pinned_archive_sha256(asset, url)
    if pinned:
        if sha256 != pinned:
            raise DownloadError(
                f"{url} serves a different archive (sha256 {sha256[:16]}…, pinned in weights/manifest.json: {pinned[:16]}…); refused; {manual}"
            )
        return "pinned"
    return "recorded" if check_recorded(url, sha256, "archive", manual) else "first"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------- archives


def extract_archive(archive: Path, into: Path, manual: str) -> None:
    """Unpack a zip, tar or compressed tar into ``into`` (no member may land outside it)."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                root = into.resolve()
                for member in z.namelist():
                    if not (into / member).resolve().is_relative_to(root):
                        raise DownloadError(f"{archive.name} holds a path outside its folder ({member}); {manual}")
                z.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
        else:
            raise DownloadError(f"the downloaded file is neither a zip nor a tar archive ({_sniff(archive)}); {manual}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib_error()) as e:
        raise DownloadError(f"the downloaded archive is corrupt ({type(e).__name__}: {str(e)[:80]}); {manual}") from None


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    return f"{path.stat().st_size:,} bytes starting {head!r}"


def find_checkpoint(root: Path, manual: str) -> Path:
    """The checkpoint folder inside an extracted release: the ``meta_learning`` one when there
    are several (the authors' layout is ``_trained_models/meta_learning/<run>/``)."""
    folders = sorted({p.parent for p in root.rglob("*.index")} | {p.parent for p in root.rglob("checkpoint") if p.is_file()})
    folders = [f for f in folders if any(f.glob("*.index"))]
    if not folders:
        raise DownloadError(f"the archive holds no TF checkpoint (no *.index file in it); {manual}")
    meta = [f for f in folders if "meta_learning" in f.relative_to(root).parts]
    pick = meta or folders
    if len(pick) > 1:
        with_state = [f for f in pick if (f / "checkpoint").is_file()]
        pick = with_state or pick
    if len(pick) > 1:
        names = ", ".join(str(f.relative_to(root)) for f in pick[:3])
        raise DownloadError(f"the archive holds several checkpoints ({names}); {manual}")
    return pick[0]


@contextlib.contextmanager
def archive_checkpoint(src: str | os.PathLike) -> Iterator[Path]:
    """``src`` itself, or for a release archive (a zip or tar file) the checkpoint folder
    inside it, extracted into a temporary folder that is removed afterwards."""
    src = Path(src)
    if not src.is_file() or src.suffix == ".index" or not (zipfile.is_zipfile(src) or tarfile.is_tarfile(src)):
        yield src
        return
    manual = "extract it yourself and pass the checkpoint folder"
    scratch = Path(tempfile.mkdtemp(prefix="thead-extract-"))
    try:
        try:
            extract_archive(src, scratch, manual)
            checkpoint = find_checkpoint(scratch, manual)
        except DownloadError as e:
            raise CheckpointError(str(e).replace("the downloaded", "the")) from None
        except OSError as e:
            raise CheckpointError(f"cannot extract {src} ({e.strerror or e})") from None
        yield checkpoint
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------- weights


def weights_dir() -> Path:
    return cache_root() / "weights" / WEIGHTS.name


@dataclass(frozen=True)
class WeightsProvenance:
    """``provenance.json`` beside weights converted from the authors' release: where the
    archive came from, its sha256 and size, the checkpoint converted (relative to the
    archive), the converted files' sha256, their parameter count, when and by which thead."""

    source_url: str
    archive_sha256: str
    archive_size: int
    checkpoint: str
    converted_sha256: dict[str, str]
    parameters: int
    date: str
    thead_version: str


@dataclass(frozen=True)
class TestsetProvenance:
    """``provenance.json`` of the authors' evaluation subset: the archive, and where its test
    set and precomputed outputs (None: none) lie, relative to the folder."""

    __test__ = False  # not a pytest class

    source_url: str
    archive_sha256: str
    archive_size: int
    testset: str
    outputs: str | None
    date: str


def _write_provenance(folder: Path, record: WeightsProvenance | TestsetProvenance) -> None:
    (folder / PROVENANCE_NAME).write_text(json.dumps(asdict(record), indent=2) + "\n")


def _read_provenance(folder: Path, kind: type, error: type[TheadError]):
    path = Path(folder) / PROVENANCE_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or bad UTF-8
        raise error(f"{path} is not readable JSON ({e}); remove {Path(folder)} to fetch it again") from None
    return decode(kind, data, error=error, source=str(path))


def read_provenance(folder: str | os.PathLike) -> WeightsProvenance | None:
    """The ``provenance.json`` of converted release weights (None when there is none), read
    strictly: a damaged one is one ``WeightsError`` line naming the key."""
    return _read_provenance(Path(folder), WeightsProvenance, WeightsError)


def cached_release_weights() -> Path | None:
    """The converted release in the cache, or None (never touches the network)."""
    folder = weights_dir()
    if all((folder / n).is_file() for n in ("config.json", "model.safetensors", PROVENANCE_NAME)):
        return folder
    return None


def weights_from_archive(archive: Path, out: Path, *, source_url: str, archive_sha256: str, manual: str) -> Path:
    """Extract ``archive``, convert its checkpoint into ``out`` (+ provenance); all or nothing."""
    import thead
    from thead._atomic import atomic_dir
    from thead._hash import sha256_file
    from thead.convert import convert_checkpoint

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=out.parent))
    try:
        extract_archive(archive, scratch, manual)
        folder = find_checkpoint(scratch, manual)
        with atomic_dir(out, overwrite=True) as tmp:
            converted = tmp / "model"
            try:
                report = convert_checkpoint(folder, converted)
            except CheckpointError as e:
                raise DownloadError(f"the archive's checkpoint does not convert ({e}); {manual}") from None
            for name in ("config.json", "model.safetensors"):
                os.replace(converted / name, tmp / name)
            converted.rmdir()
            _write_provenance(tmp, WeightsProvenance(
                source_url=source_url,
                archive_sha256=archive_sha256,
                archive_size=archive.stat().st_size,
                checkpoint=str(report.source.relative_to(scratch)),
                converted_sha256={n: sha256_file(tmp / n) for n in ("config.json", "model.safetensors")},
                parameters=report.total_parameters,
                date=_now(),
                thead_version=thead.__version__,
            ))
    except OSError as e:
        raise _os_failure(e, "converting", manual) from None
    except OutputError as e:
        raise DownloadError(f"{e}; {manual}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _os_failure(e: OSError, doing: str, manual: str) -> DownloadError:
    import errno

    if e.errno == errno.ENOSPC:
        return DownloadError(f"disk full while {doing} the release in {cache_root()}; free space, then run again, or {manual}")
    return DownloadError(f"{doing} the release failed ({e.strerror or e}); {manual}")


def _fetch_archive(asset: ReleaseAsset, url: str, manual: str, display: Progress) -> tuple[Path, str]:
    """The archive, downloaded (or left complete by an interrupted earlier run), trust-checked."""
    from thead._hash import sha256_file

    archive = cache_root() / "downloads" / f"{asset.name}.archive"
    if archive.is_file():
        digest = sha256_file(archive)
        display.note(f"using the archive downloaded earlier ({archive})")
    else:
        if partial_files(archive.with_name(archive.name + ".download")):
            display.note("resuming the earlier, broken download")
        try:
            digest = fetch(url, archive, what=asset.what, manual=manual, display=display).sha256
        except KeyboardInterrupt:
            display.note("interrupted: the partial download is kept and the next run resumes it")
            raise
    try:
        how = _check_trust(asset, url, digest, manual)
    except DownloadError:
        remove_cached(archive)
        raise
    if how == "first":
        display.note(f"archive sha256 {digest} (no published checksum: recorded now, later downloads must match it)")
    else:
        display.note(f"archive sha256 {digest} (matches the one {'pinned' if how == 'pinned' else 'recorded at the first download'})")
    return archive, digest


def release_weights(*, keep_archive: bool = False, display: Progress | None = None) -> Path:
    """The authors' checkpoint, converted and cached (downloading it when needed)."""
    cached = cached_release_weights()
    if cached is not None:
        return cached
    display = display or stderr_display()
    url = release_url(WEIGHTS)
    manual = _manual_weights(url)
    if offline():  # before saying anything: the one line is the error
        raise DownloadError(f"downloads are off ({' / '.join('$' + n for n in OFFLINE_ENVS)}) and no LSR weights are cached; {manual}")
    display.note(f"no LSR weights cached: fetching {WEIGHTS.what} (once; converting it takes about "
                 f"{CONVERT_S_PER_GB:.0f} s per GB of archive)")
    archive, digest = _fetch_archive(WEIGHTS, url, manual, display)
    with _archive_kept_only_on_success(archive, keep_archive, display):
        out = weights_from_archive(archive, weights_dir(), source_url=url, archive_sha256=digest, manual=manual)
        record_sha256(url, digest)
    display.note(f"converted and cached in {out}")
    return out


@contextlib.contextmanager
def _archive_kept_only_on_success(archive: Path, keep: bool, display: Progress) -> Iterator[None]:
    """A failed extraction or conversion deletes the archive (nothing half-done stays in the
    cache); Ctrl-C keeps the complete archive for the next run; success deletes it unless
    ``keep``."""
    try:
        yield
    except KeyboardInterrupt:
        display.note(f"interrupted: nothing was cached; the complete archive is kept for the next run ({archive})")
        raise
    except BaseException:
        remove_cached(archive)
        raise
    if not keep:
        remove_cached(archive)


# ------------------------------------------------------------------------------- test set


def testset_dir() -> Path:
    return cache_root() / "testsets" / "voxceleb"


def find_fsth_layout(root: Path) -> tuple[Path, Path | None]:
    """(the FSTH test-set folder, the authors' precomputed outputs or None) inside ``root``.

    The test set is the shallowest folder with ``train/`` and ``test/`` of
    ``<person>/<video>/<part>/`` frames (``thead.eval.protocol.load_testset``); outputs are the
    shallowest other folder of ``<person>/<run>/NN.png`` for the same persons.
    """
    folders = [root, *sorted(d for d in root.rglob("*") if d.is_dir())]
    roots = [p for p in folders if is_fsth_root(p)]
    if not roots:
        raise DatasetError(
            "the evaluation archive has no FSTH layout in it (train/ and test/ of <person>/<video>/<part>/ frames)"
        )
    testset = min(roots, key=lambda p: len(p.parts))
    outputs = [p for p in folders if not p.is_relative_to(testset) and not testset.is_relative_to(p) and is_outputs_root(p, testset)]
    return testset, (min(outputs, key=lambda p: len(p.parts)) if outputs else None)


def is_fsth_root(folder: Path) -> bool:
    """``folder/train`` and ``folder/test`` with ``<person>/<video>/<part>/`` frame folders."""
    return (folder / "train").is_dir() and (folder / "test").is_dir() and any(
        d.is_dir() for d in (folder / "test").glob("*/*/*")
    )


def is_outputs_root(folder: Path, testset: Path) -> bool:
    """``folder/<person>/<run>/NN.png`` for persons of ``testset``."""
    people = {d.name for d in (testset / "test").iterdir() if d.is_dir()}
    return any(d.name in people and any(r.is_dir() and any(r.glob("[0-9]*.png")) for r in d.iterdir())
               for d in folder.iterdir() if d.is_dir())


def cached_testset() -> Path | None:
    folder = testset_dir()
    return folder if (folder / PROVENANCE_NAME).is_file() else None


def release_testset(*, keep_archive: bool = False, display: Progress | None = None) -> Path:
    """The authors' evaluation subset, extracted in the cache (downloading it when needed)."""
    cached = cached_testset()
    if cached is not None:
        return cached
    from thead._atomic import atomic_dir

    display = display or stderr_display()
    url = release_url(TESTSET)
    manual = _manual_testset(url)
    archive, digest = _fetch_archive(TESTSET, url, manual, display)
    out = testset_dir()
    with _archive_kept_only_on_success(archive, keep_archive, display):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_dir(out, overwrite=True) as tmp:
                extract_archive(archive, tmp, manual)
                testset, outputs = find_fsth_layout(tmp)
                _write_provenance(tmp, TestsetProvenance(
                    source_url=url, archive_sha256=digest, archive_size=archive.stat().st_size,
                    testset=str(testset.relative_to(tmp)), outputs=str(outputs.relative_to(tmp)) if outputs else None,
                    date=_now(),
                ))
        except OSError as e:
            raise _os_failure(e, "extracting", manual) from None
        except (DatasetError, OutputError) as e:
            raise DownloadError(f"{e}; {manual}") from None
        record_sha256(url, digest)
    return out


def authors_outputs() -> Path:
    """The authors' precomputed outputs in their evaluation subset (fetched when needed)."""
    outputs = testset_paths(release_testset())[1]
    if outputs is None:
        raise DatasetError(
            f"the authors' evaluation archive ({release_url(TESTSET)}) carries no precomputed outputs "
            "(no folder of <person>/<run>/NN.png frames for its persons)"
        )
    return outputs


def testset_paths(folder: Path) -> tuple[Path, Path | None]:
    """(test set, outputs or None) of a cached evaluation subset, from its provenance."""
    p = _read_provenance(folder, TestsetProvenance, DatasetError)
    if p is None:
        return folder, None
    return folder / p.testset, (folder / p.outputs if p.outputs else None)
