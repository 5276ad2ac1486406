"""What converting the authors' full-size checkpoint costs, against reading the same bytes.

The released checkpoint cannot be downloaded here, so this writes one of the same layout: every
entry of the full-width meta-learning checkpoint (``shared/parity/variables.txt``, section
``two_step_syn : FULL``: 302 network variables, 604 Adam slots, counters; 98.1 M parameters,
1.18 GB) with random values, as a TF tensor bundle (``tests/convert/bundle_writer.py``). Then,
interleaved A/B in one process, median of ``--repeats``:

- read: every byte of the checkpoint's files read from the page cache (1 MiB ``readinto``);
- convert: ``thead.convert.convert_checkpoint`` (parse, crc32c-check and transpose every network
  tensor, check against the architecture, write ``config.json`` + ``model.safetensors``).

Both run with a warm page cache (the files were just written and read), so "read" is the
cheapest way to touch the bytes and the ratio is an upper bound on conversion's overhead.
Usage: python benchmarks/convert_bench.py [--repeats 3] [--threads 2] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VARIABLES = REPO.parent / "shared" / "parity" / "variables.txt"
SECTION = "two_step_syn : FULL"
_DTYPES = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}


def full_size_entries(variables: Path = VARIABLES) -> dict[str, tuple[tuple[int, ...], str]]:
    out, inside = {}, False
    for line in variables.read_text().splitlines():
        if line.startswith("## SECTION"):
            inside = SECTION in line
            continue
        if inside and line and not line.startswith(("#", "=")):
            key, shape, dtype = line.split("\t")[:3]
            out[key] = (tuple(json.loads(shape)), dtype)
    if not out:
        raise SystemExit(f"section {SECTION!r} not found in {variables}")
    return out


def write_full_checkpoint(folder: Path) -> Path:
    from tests.convert.bundle_writer import write_bundle

    rng = np.random.default_rng(0)
    tensors = {}
    for key, (shape, dtype) in full_size_entries().items():
        if dtype not in _DTYPES:  # the object graph (a string), which the converter ignores
            continue
        if dtype == "float32":
            tensors[key] = rng.standard_normal(shape, dtype=np.float32) * 0.02
        else:
            tensors[key] = np.zeros(shape, _DTYPES[dtype])
    folder.mkdir(parents=True, exist_ok=True)
    write_bundle(folder / "ckpt-0", tensors)
    (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-0"\nall_model_checkpoint_paths: "ckpt-0"\n')
    return folder


def read_all(folder: Path) -> int:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    for path in sorted(folder.iterdir()):
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
    return total


def read_all_direct(folder: Path) -> int:
    """The same bytes read from the disk itself (``O_DIRECT``: the page cache is bypassed, no
    need to drop it on a shared machine). On a VM the host may still cache them."""
    import mmap
    import os

    buf = mmap.mmap(-1, 8 << 20)  # page-aligned, as O_DIRECT needs
    total = 0
    for path in sorted(folder.iterdir()):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            while (n := os.readv(fd, [buf])) > 0:
                total += n
        finally:
            os.close(fd)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from thead.convert import convert_checkpoint

    work = Path(tempfile.mkdtemp(prefix="convert-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        ckpt = write_full_checkpoint(work / "ckpt")
        size = sum(p.stat().st_size for p in ckpt.iterdir())
        print(f"wrote a full-size checkpoint: {size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
        read_all(ckpt)  # warm the page cache
        reads, directs, converts = [], [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            n = read_all(ckpt)
            reads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read_all_direct(ckpt)
            directs.append(time.perf_counter() - t0)
            out = work / f"out{i}"
            t0 = time.perf_counter()
            report = convert_checkpoint(ckpt, out)
            converts.append(time.perf_counter() - t0)
            written = sum(p.stat().st_size for p in out.iterdir())
            shutil.rmtree(out)
        read_s, direct_s, convert_s = (statistics.median(x) for x in (reads, directs, converts))
        print(f"parameters {report.total_parameters:,}; read {n / 1e9:.2f} GB, wrote {written / 1e9:.2f} GB")
        for label, s, runs in (("read, page cache", read_s, reads), ("read, disk (O_DIRECT)", direct_s, directs), ("convert", convert_s, converts)):
            print(f"{label:22s} {s:6.2f} s  {n / s / 1e9:5.2f} GB/s   runs {', '.join(f'{r:.2f}' for r in runs)}")
        print(f"convert / disk read = {convert_s / direct_s:.2f}; convert / page-cache read = {convert_s / read_s:.2f}; "
              f"{convert_s / (n / 1e9):.2f} s per GB of checkpoint")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
