"""Test-only: write a TF tensor bundle (index table + one data shard) from numpy arrays.

Enough of the format to build corrupt or altered checkpoints for the converter's error tests:
one uncompressed data block of sorted entries (no key prefix sharing, one restart point), an
index block pointing at it, an empty metaindex block and the 48-byte footer.
"""

from __future__ import annotations

import struct
from pathlib import Path

import crc32c
import numpy as np

_DT = {np.dtype("<f4"): 1, np.dtype("<i8"): 9, np.dtype("bool"): 10}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def _bytes_field(num: int, data: bytes) -> bytes:
    return _field(num, 2, _varint(len(data)) + data)


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)


def _with_trailer(block: bytes) -> bytes:
    return block + b"\x00" + struct.pack("<I", _mask(crc32c.crc32c(block + b"\x00")))


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], claimed: dict[str, tuple[tuple[int, ...], int]] | None = None) -> None:
    """``claimed``: key -> (shape, byte size) written in the index instead of the array's own
    (a hostile or damaged index; the data file keeps the real bytes)."""
    data, entries = bytearray(), []
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        raw = a.tobytes()
        dims, size = (claimed or {}).get(key, (a.shape, len(raw)))
        shape = b"".join(_bytes_field(2, _field(1, 0, _varint(d))) for d in dims)
        entry = (
            _field(1, 0, _varint(_DT[a.dtype])) + _bytes_field(2, shape) + _field(4, 0, _varint(len(data)))
            + _field(5, 0, _varint(size)) + _field(6, 5, struct.pack("<I", _mask(crc32c.crc32c(raw))))
        )
        entries.append((key.encode(), entry))
        data += raw
    header = _field(1, 0, _varint(1)) + _field(3, 2, _varint(2) + _field(1, 0, _varint(1)))
    table = bytearray()
    block = _block([(b"", header)] + entries)
    table += _with_trailer(block)
    data_handle = _varint(0) + _varint(len(block))
    meta = _block([])
    meta_off = len(table)
    table += _with_trailer(meta)
    index = _block([(entries[-1][0], data_handle)])
    index_off = len(table)
    table += _with_trailer(index)
    footer = _varint(meta_off) + _varint(len(meta)) + _varint(index_off) + _varint(len(index))
    table += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(bytes(table))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
