"""ArrayRecord shards of videos: one record per video.

A record is `b"TEAV1"`, a little-endian uint32 header length, the msgpack header
`{"id": str, "label": int, "sizes": [int, ...]}` and the encoded (JPEG) frames back to back, so
reading a clip parses a few bytes and slices only the frames it decodes. Records are stored
uncompressed (JPEG does not compress further). Shards of a split are
`DIR/SPLIT.array_record-XXXXX-of-YYYYY`; `DIR/meta.json` holds
`{"num_classes": int, "classes": [...], "splits": {split: num_examples}, ...}`.
"""

import glob
import itertools
import json
import os
import struct
from collections.abc import Iterable

import cv2
import grain
import msgpack
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

_MAGIC = b"TEAV1"
_PREFIX = len(_MAGIC) + 4


def encode(video_id: str, label: int, frames: Iterable[bytes]) -> bytes:
    frames = list(frames)
    header = msgpack.packb({"id": video_id, "label": int(label), "sizes": [len(f) for f in frames]})
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *frames])


def decode(record: bytes) -> dict:
    """-> {"id": str, "label": int, "frames": [memoryview of each encoded frame]}."""
    if record[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a video record (bad magic)")
    (length,) = struct.unpack_from("<I", record, len(_MAGIC))
    header = msgpack.unpackb(record[_PREFIX : _PREFIX + length])
    offsets = np.cumsum([_PREFIX + length, *header["sizes"]]).tolist()
    if offsets[-1] != len(record):
        raise ValueError(f"record holds {len(record)} bytes, its header describes {offsets[-1]}")
    view = memoryview(record)
    frames = [view[a:b] for a, b in itertools.pairwise(offsets)]
    return {"id": header["id"], "label": header["label"], "frames": frames}


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 RGB (H, W, 3) -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def shard_paths(directory: str, split: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, f"{split}.array_record-*-of-*")))


def open_shards(paths: list[str]) -> grain.sources.ArrayRecordDataSource:
    if not paths:
        raise FileNotFoundError("no ArrayRecord shards")
    return grain.sources.ArrayRecordDataSource(paths)


class ShardedWriter:
    """Writes records round-robin into `num_shards` files of one split.

    Args:
      directory: output folder.
      split: split name (file prefix).
      num_shards: files to write; a few hundred MB each suits pods.
    """

    def __init__(self, directory: str, split: str, num_shards: int):
        os.makedirs(directory, exist_ok=True)
        self._writers = [
            ArrayRecordWriter(
                os.path.join(directory, f"{split}.array_record-{i:05d}-of-{num_shards:05d}"),
                "group_size:1,uncompressed",
            )
            for i in range(num_shards)
        ]
        self.count = 0

    def write(self, record: bytes) -> None:
        self._writers[self.count % len(self._writers)].write(record)
        self.count += 1

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_meta(directory: str) -> dict:
    with open(os.path.join(directory, "meta.json")) as f:
        return json.load(f)


def write_meta(directory: str, meta: dict) -> None:
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
