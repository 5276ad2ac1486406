"""A TensorFlow-free reader for TF2 checkpoints ("tensor bundle" V2).

A bundle is ``PREFIX.index`` — a LevelDB-format sorted-string table mapping each tensor key to
a serialized ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked crc32c), with the
empty key holding the ``BundleHeaderProto`` (number of shards) — plus the raw little-endian
tensor bytes in ``PREFIX.data-SSSSS-of-NNNNN``. Every table block and every tensor read is
checked against its crc32c; any inconsistency is a one-line ``CheckpointError``.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import crc32c as _crc32c
import numpy as np

from thead.errors import CheckpointError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes masked crc32c
# tensorflow/core/framework/types.proto -> numpy (DT_STRING and resources are not network data)
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 14: "bfloat16", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode a protobuf message into (field number, value) pairs (no schema needed)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = struct.unpack_from("<Q", buf, i)[0], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = struct.unpack_from("<I", buf, i)[0], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: dtype code, shape, shard, byte range, crc32c (unmasked)."""

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None


def _parse_entry(key: str, value: bytes) -> BundleEntry:
    dtype, shape, shard, offset, size, crc = 0, [], 0, 0, 0, None
    for field, v in _proto_fields(value):
        if field == 1:
            dtype = v
        elif field == 2:  # TensorShapeProto: repeated Dim dim = 2 { int64 size = 1 }
            for f2, dim in _proto_fields(v):
                if f2 == 2:
                    size_ = dict(_proto_fields(dim)).get(1, 0)
                    shape.append(size_ - (1 << 64) if size_ >= 1 << 63 else size_)
        elif field == 3:
            shard = v
        elif field == 4:
            offset = v
        elif field == 5:
            size = v
        elif field == 6:
            crc = _unmask(v)
        elif field == 7:
            raise CheckpointError(f"tensor {key} is stored in slices (partitioned variables are not supported)")
    return BundleEntry(key, dtype, tuple(shape), shard, offset, size, crc)


class _Table:
    """Just enough of LevelDB's table format to list every (key, value) in order."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name
        if len(data) < _FOOTER_LEN or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
            raise CheckpointError(f"{name} is truncated or not a TF checkpoint index (bad table footer)")
        footer = data[-_FOOTER_LEN:]
        _, i = _varint(footer, 0)  # metaindex handle (unused)
        _, i = _varint(footer, i)
        self.index_offset, i = _varint(footer, i)
        self.index_size, _ = _varint(footer, i)

    def _block(self, offset: int, size: int) -> bytes:
        end = offset + size + _BLOCK_TRAILER
        if end > len(self.data) - _FOOTER_LEN:
            raise CheckpointError(f"{self.name} is truncated (a table block runs past the end)")
        block, ctype = self.data[offset : offset + size], self.data[offset + size]
        (masked,) = struct.unpack_from("<I", self.data, offset + size + 1)
        if _crc32c.crc32c(block + bytes([ctype])) != _unmask(masked):
            raise CheckpointError(f"{self.name} is corrupt (crc32c mismatch in a table block at byte {offset})")
        if ctype != 0:
            raise CheckpointError(f"{self.name} uses table compression {ctype}; only uncompressed indexes are supported")
        return block

    @staticmethod
    def _entries(block: bytes):
        (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
        end = len(block) - 4 - 4 * num_restarts
        i, key = 0, b""
        while i < end:
            shared, i = _varint(block, i)
            non_shared, i = _varint(block, i)
            vlen, i = _varint(block, i)
            key = key[:shared] + block[i : i + non_shared]
            i += non_shared
            yield key, block[i : i + vlen]
            i += vlen

    def items(self):
        for _, handle in self._entries(self._block(self.index_offset, self.index_size)):
            offset, j = _varint(handle, 0)
            size, _ = _varint(handle, j)
            yield from self._entries(self._block(offset, size))


class TensorBundle:
    """Read-only view of a TF2 checkpoint: ``keys()``, ``entry(key)``, ``read(key) -> ndarray``."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        index = Path(f"{self.prefix}.index")
        try:
            data = index.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{index} not found") from None
        try:
            items = list(_Table(data, index.name).items())
        except (ValueError, struct.error, IndexError) as e:
            raise CheckpointError(f"{index.name} is corrupt ({e})") from None
        self.num_shards = 1
        self.entries: dict[str, BundleEntry] = {}
        for key, value in items:
            if key == b"":
                self.num_shards = dict(_proto_fields(value)).get(1, 1)
                continue
            k = key.decode("utf-8", "replace")
            try:
                self.entries[k] = _parse_entry(k, value)
            except (ValueError, struct.error, IndexError) as e:
                raise CheckpointError(f"{index.name}: entry {k} is corrupt ({e})") from None
        self._shards: dict[int, np.memmap] = {}

    def keys(self) -> list[str]:
        return list(self.entries)

    def _shard(self, n: int) -> np.memmap:
        if n not in self._shards:
            path = Path(f"{self.prefix}.data-{n:05d}-of-{self.num_shards:05d}")
            if not path.exists():
                raise CheckpointError(f"checkpoint shard {path.name} is missing")
            self._shards[n] = np.memmap(path, dtype=np.uint8, mode="r")
        return self._shards[n]

    def check(self, key: str) -> np.dtype:
        """The index entry agrees with itself and with its data file (dtype known, shape of
        non-negative sizes whose bytes are the stored size, the range inside the shard), checked
        without reading or allocating anything: a claimed shape is backed by real bytes."""
        e = self.entries[key]
        if e.dtype not in _DTYPES or _DTYPES[e.dtype] == "bfloat16":
            raise CheckpointError(f"tensor {key} has dtype code {e.dtype}, which the converter does not read")
        dtype = np.dtype(_DTYPES[e.dtype])
        if any(d < 0 for d in e.shape) or len(e.shape) > 8:
            raise CheckpointError(f"tensor {key} has an impossible shape {list(e.shape)}")
        expected = math.prod(e.shape) * dtype.itemsize
        if expected != e.size:
            raise CheckpointError(f"tensor {key}: {e.size} bytes stored for shape {list(e.shape)}")
        if e.offset < 0 or e.offset + e.size > self._shard(e.shard).size:
            raise CheckpointError(f"checkpoint shard {e.shard} is truncated (tensor {key} runs past its end)")
        return dtype

    def read(self, key: str) -> np.ndarray:
        """The tensor's values (crc32c-checked), as a numpy array of its dtype and shape: a
        read-only view of the mapped data file (copy it to keep or change it)."""
        e = self.entries[key]
        dtype = self.check(key)
        raw = self._shard(e.shard)[e.offset : e.offset + e.size]  # a view of the mapped file, not a copy
        if e.crc32c is not None and _crc32c.crc32c(raw) != e.crc32c:
            raise CheckpointError(f"tensor {key} is corrupt (crc32c mismatch in the data file)")
        return np.frombuffer(raw, dtype=dtype).reshape(e.shape)


def find_checkpoint_prefix(path: str | os.PathLike) -> Path:
    """A checkpoint folder (its ``checkpoint`` state file, else the newest ``*.index``), a
    prefix such as ``run/ckpt-42``, or the ``.index`` file itself -> the bundle prefix."""
    p = Path(path)
    if p.suffix == ".index" and p.is_file():
        return p.with_suffix("")
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(errors="replace"), re.M)
            if m:
                prefix = Path(m.group(1))
                prefix = prefix if prefix.is_absolute() else p / prefix
                if Path(f"{prefix}.index").exists():
                    return prefix
                # the state file may carry the training machine's absolute path
                local = p / prefix.name
                if Path(f"{local}.index").exists():
                    return local
        indexes = sorted(p.glob("*.index"), key=lambda f: _step_of(f.stem))
        if not indexes:
            raise CheckpointError(f"{p} is not a TF checkpoint folder (no *.index file)")
        return indexes[-1].with_suffix("")
    if Path(f"{p}.index").exists():
        return p
    if not p.exists():
        raise CheckpointError(f"{p} does not exist")
    raise CheckpointError(f"{p} is not a TF checkpoint (give its folder, its prefix or its .index file)")


def _step_of(stem: str) -> int:
    m = re.search(r"-(\d+)$", stem)
    return int(m.group(1)) if m else -1
