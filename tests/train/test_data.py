"""Training data on the real sample frames: index, example assembly (ref §1.7), sampler
sharding and resume, broken files, workers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from thead.errors import DatasetError
from thead.train.data import ClipDataset, DatasetIndex, ExampleSampler, collate, example_rng, read_rgb

CLIP = "train/id00017/OLguY5ofUrY/combined"


@pytest.fixture(scope="module")
def index(processed, index_path):
    return DatasetIndex.load(index_path, processed)


def test_index_lists_clips_frames_and_segmaps(index, processed, tmp_path):
    assert [index.clip(i).directory for i in range(len(index))] == ["test/id00017/OLguY5ofUrY/combined", CLIP]
    clip = index.clip(1)
    assert clip.frames == tuple(range(32)) and clip.has_segmaps
    assert clip.ids == ("id00017", "OLguY5ofUrY", "combined")
    index.save(tmp_path / "i.npz")
    loaded, report = DatasetIndex.load_or_build(processed, tmp_path / "i.npz")
    assert report is None  # read from the file, no walk
    assert all(np.array_equal(getattr(loaded, k), getattr(index, k)) for k in ("directories", "offsets", "frames", "segmaps"))
    with pytest.raises(DatasetError, match="40\\+ frames"):
        index.usable(min_frames=40, need_segmaps=False)
    assert len(index.usable(min_frames=10, need_segmaps=True)) == 2


def test_unprocessed_frames_need_thead_prep(sample_dir, tmp_path):
    with pytest.raises(DatasetError, match="6 folders have frames without _contour.png: run `thead prep`"):
        DatasetIndex.load_or_build(sample_dir / "fsth_eval_subset", tmp_path / "i.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable thead training index"):
        DatasetIndex.load(tmp_path / "corrupt.npz", sample_dir)


def test_example_is_k_shots_and_the_last_permuted_frame_of_the_first_ten(index, processed):
    ds = ClipDataset(index, num_shots=4, window=10, segmaps=True, seed=7)
    shots_rgb, shots_contour, target_rgb, target_contour, segmap, skipped = ds[(1, 123)]
    perm = example_rng(7, 123).permutation(10)
    folder = processed / CLIP
    for k, frame in enumerate(perm[:4]):
        assert torch.equal(shots_rgb[k], read_rgb(folder / f"{frame:05d}_rgb.png", 224))
        assert torch.equal(shots_contour[k], read_rgb(folder / f"{frame:05d}_contour.png", 224))
    assert torch.equal(target_rgb, read_rgb(folder / f"{perm[-1]:05d}_rgb.png", 224))
    assert torch.equal(target_contour, read_rgb(folder / f"{perm[-1]:05d}_contour.png", 224))
    assert perm[-1] not in perm[:4] and set(perm) == set(range(10))  # 5 distinct frames of the first 10
    assert segmap.dtype == torch.int64 and segmap.shape == (224, 224) and 0 <= segmap.min() and segmap.max() <= 18
    assert target_rgb.min() >= -1 and target_rgb.max() <= 1 and skipped == ()
    again = ds[(1, 123)]
    assert all(torch.equal(a, b) for a, b in zip(again[:5], (shots_rgb, shots_contour, target_rgb, target_contour, segmap)))


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_sampler_shards_the_global_batch_and_resumes_exactly():
    one = _take(ExampleSampler(5, batch_size=4, seed=3), 4 * 6)
    r0 = _take(ExampleSampler(5, batch_size=2, seed=3, rank=0, world_size=2), 2 * 6)
    r1 = _take(ExampleSampler(5, batch_size=2, seed=3, rank=1, world_size=2), 2 * 6)
    interleaved = [x for s in range(6) for x in r0[2 * s : 2 * s + 2] + r1[2 * s : 2 * s + 2]]
    assert interleaved == one
    assert [p for _, p in one] == list(range(24))
    assert sorted(c for c, _ in one[:5]) == [0, 1, 2, 3, 4]  # each epoch is a permutation of the clips
    assert [c for c, _ in one[:5]] != [c for c, _ in one[5:10]]
    assert _take(ExampleSampler(5, batch_size=4, seed=3, start_position=8), 16) == one[8:]
    with pytest.raises(DatasetError, match="multiple of the global batch"):
        ExampleSampler(5, batch_size=4, seed=3, start_position=6)


@pytest.mark.slow
def test_broken_files_are_skipped_counted_and_workers_match(processed, tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        src = processed / split / "id00017/OLguY5ofUrY/combined"
        dst = root / split / "id00017/OLguY5ofUrY/clip"
        dst.mkdir(parents=True)
        for f in sorted(src.iterdir())[:30]:  # frames 00000..00009
            shutil.copy(f, dst / f.name)
    bad = root / "train/id00017/OLguY5ofUrY/clip/00003_rgb.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    (root / "test/id00017/OLguY5ofUrY/clip/00005_contour.png").unlink()  # that frame is left out of the index
    index, report = DatasetIndex.load_or_build(root, tmp_path / "i.npz")
    assert report.frames_without_contour == 1 and index.num_frames().tolist() == [9, 10]
    index = index.usable(min_frames=9, need_segmaps=False)
    ds = ClipDataset(index, num_shots=2, window=9, seed=0)

    def batches(workers):
        sampler = ExampleSampler(len(index), batch_size=2, seed=0)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers, collate_fn=collate)
        it = iter(loader)
        return [next(it) for _ in range(8)]

    serial, parallel = batches(0), batches(2)
    skipped = [s for b in serial for s in b.skipped]
    assert skipped and all("00003_rgb.png" in s for s in skipped)
    assert all(len(b) == 2 for b in serial)  # replaced from another clip, batch size kept
    for a, b in zip(serial, parallel):
        assert torch.equal(a.target_rgb, b.target_rgb) and torch.equal(a.shots_contour, b.shots_contour)
        assert a.skipped == b.skipped
