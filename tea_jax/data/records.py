"""ArrayRecord shards of videos: one record per frame, and a per-split index of the videos.

Layout 2 (written by `python -m tea_jax.data.prepare arrayrecord`): each record is one encoded
(JPEG) frame, stored uncompressed with `group_size:1` so that every record is read on its own, and
a video's frames are consecutive records of one shard. Reading a clip therefore reads only the
frames it decodes (~20 KB each) instead of the whole video. `DIR/SPLIT.index.msgpack` lists the
videos of a split:
`{"layout": 2, "shards": [file name, ...], "shard_records": [int, ...], "id": [str, ...],
"label": [int, ...], "shard": [int, ...], "first": [int, ...], "num_frames": [int, ...]}`
(`first`: position of the video's first frame in its shard).

Layout 1 (written before layout 2, still read): one record per video, `b"TEAV1"`, a
little-endian uint32 header length, the msgpack header `{"id": str, "label": int, "sizes": [int,
...]}` and the encoded frames back to back.

Shards of a split are `DIR/SPLIT.array_record-XXXXX-of-YYYYY`; `DIR/meta.json` holds
`{"num_classes": int, "classes": [...], "splits": {split: num_videos}, "layouts": {split: 2}}`
(a split missing from `layouts` has layout 1).
"""

import glob
import itertools
import json
import os
import struct
from collections.abc import Iterable, Sequence

import cv2
import grain
import msgpack
import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from tea_jax import storage
from tea_jax.data.errors import DataError

FRAME_RECORDS = 2
VIDEO_RECORDS = 1
_WRITER_OPTIONS = "group_size:1,uncompressed"
_MAGIC = b"TEAV1"
_PREFIX = len(_MAGIC) + 4


def encode(video_id: str, label: int, frames: Iterable[bytes]) -> bytes:
    """A layout-1 record: a whole video."""
    frames = list(frames)
    header = msgpack.packb({"id": video_id, "label": int(label), "sizes": [len(f) for f in frames]})
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *frames])


def decode(record: bytes) -> dict:
    """Layout-1 record -> {"id": str, "label": int, "frames": [memoryview of each frame]}."""
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


def index_path(directory: str, split: str) -> str:
    return os.path.join(directory, f"{split}.index.msgpack")


def shard_name(split: str, shard: int, num_shards: int) -> str:
    """File name of shard `shard` (0-based) of a split written in `num_shards` files."""
    return f"{split}.array_record-{shard:05d}-of-{num_shards:05d}"


def shard_writer(path: str) -> ArrayRecordWriter:
    """An ArrayRecord writer with this module's options (one record per chunk, uncompressed)."""
    return ArrayRecordWriter(path, _WRITER_OPTIONS)


def write_index(
    directory: str, split: str, shards: Sequence[str], shard_records: Sequence[int], videos: dict
) -> None:
    """Writes a split's layout-2 index (see the module docstring) under a temporary name first.

    Args:
      directory: output folder.
      split: split name.
      shards: shard file names, in shard order.
      shard_records: records in each shard.
      videos: "id", "label", "shard", "first", "num_frames" -> one value per video.
    """
    index = {
        "layout": FRAME_RECORDS,
        "shards": list(shards),
        "shard_records": list(shard_records),
        **{key: list(videos[key]) for key in ("id", "label", "shard", "first", "num_frames")},
    }
    storage.write_bytes(index_path(directory, split), msgpack.packb(index))


def open_shards(paths: list[str]) -> grain.sources.ArrayRecordDataSource:
    """All records of layout-1 shards, in shard order."""
    if not paths:
        raise FileNotFoundError("no ArrayRecord shards")
    return grain.sources.ArrayRecordDataSource(paths)


class ShardedWriter:
    """Writes layout-1 records (whole videos) round-robin into `num_shards` files of one split.

    Args:
      directory: output folder.
      split: split name (file prefix).
      num_shards: files to write.
    """

    def __init__(self, directory: str, split: str, num_shards: int):
        os.makedirs(directory, exist_ok=True)
        self._writers = [
            ArrayRecordWriter(
                os.path.join(directory, shard_name(split, i, num_shards)), _WRITER_OPTIONS
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


class FrameRecordWriter:
    """Writes videos of one split in layout 2: one record per frame, then the split's index.

    Videos go round-robin to the shards; the frames of a video are consecutive records of its
    shard. The index is written by `close`.

    Args:
      directory: output folder.
      split: split name (file prefix).
      num_shards: files to write; a few hundred MB each suits pods.
    """

    def __init__(self, directory: str, split: str, num_shards: int):
        os.makedirs(directory, exist_ok=True)
        self._directory, self._split = directory, split
        self._names = [shard_name(split, i, num_shards) for i in range(num_shards)]
        self._writers = [shard_writer(os.path.join(directory, name)) for name in self._names]
        self._shard_records = [0] * num_shards
        self._videos = {"id": [], "label": [], "shard": [], "first": [], "num_frames": []}

    @property
    def count(self) -> int:
        """Videos written so far."""
        return len(self._videos["id"])

    def write(self, video_id: str, label: int, frames: Sequence[bytes]) -> None:
        if not frames:
            raise ValueError(f"{video_id}: no frames to write")
        shard = self.count % len(self._writers)
        for frame in frames:
            self._writers[shard].write(frame)
        for key, value in (
            ("id", video_id),
            ("label", int(label)),
            ("shard", shard),
            ("first", self._shard_records[shard]),
            ("num_frames", len(frames)),
        ):
            self._videos[key].append(value)
        self._shard_records[shard] += len(frames)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        write_index(self._directory, self._split, self._names, self._shard_records, self._videos)

    def __enter__(self) -> "FrameRecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameRecordReader:
    """Random access to the videos of a layout-2 split; shards are opened on first use.

    Picklable: a copy (e.g. in a loader worker) loads the index again and opens its own readers.

    Args:
      directory: the folder written by `FrameRecordWriter`.
      split: split name.

    Raises:
      DataError: the index is missing or malformed.
    """

    def __init__(self, directory: str, split: str):
        self._directory, self._split = directory, split
        path = index_path(directory, split)
        try:
            with open(path, "rb") as f:
                index = msgpack.unpackb(f.read())
            self._shards = [os.path.join(directory, name) for name in index["shards"]]
            self._shard_records = list(index["shard_records"])
            self._ids = list(index["id"])
            self._label = np.asarray(index["label"], np.int64)
            self._shard = np.asarray(index["shard"], np.int64)
            self._first = np.asarray(index["first"], np.int64)
            self._num_frames = np.asarray(index["num_frames"], np.int64)
        except OSError as e:
            raise DataError(path, f"cannot read the split's index ({e.strerror})") from None
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
            raise DataError(path, f"malformed index ({e})") from None
        sizes = {len(self._ids), *map(len, (self._label, self._shard, self._first))}
        if len(sizes | {len(self._num_frames)}) != 1:
            raise DataError(path, "malformed index (lists of different lengths)")
        self._readers: list[ArrayRecordReader | None] = [None] * len(self._shards)

    def __getstate__(self):
        return {"directory": self._directory, "split": self._split}

    def __setstate__(self, state):
        self.__init__(state["directory"], state["split"])

    def __len__(self) -> int:
        return len(self._ids)

    def video(self, index: int) -> tuple[str, int, int]:
        """(id, label, num_frames) of video `index`."""
        return self._ids[index], int(self._label[index]), int(self._num_frames[index])

    def location(self, index: int, frame: int) -> str:
        """Where frame `frame` of video `index` is stored: 'SHARD record N'."""
        position = int(self._first[index]) + frame
        return f"{self._shards[self._shard[index]]} record {position}"

    def _reader(self, shard: int) -> ArrayRecordReader:
        if self._readers[shard] is None:
            path = self._shards[shard]
            if not os.path.isfile(path):
                raise DataError(path, "shard file is missing")
            try:
                reader = ArrayRecordReader(path, "readahead_buffer_size:0")
            except (OSError, RuntimeError, ValueError) as e:
                raise DataError(path, f"cannot open shard ({e})") from None
            if not reader.ok():
                raise DataError(path, "cannot open shard (truncated or not an ArrayRecord file)")
            if reader.num_records() != self._shard_records[shard]:
                raise DataError(
                    path,
                    f"shard holds {reader.num_records()} records, the index "
                    f"{index_path(self._directory, self._split)} says "
                    f"{self._shard_records[shard]}",
                )
            self._readers[shard] = reader
        return self._readers[shard]

    def frame(self, index: int, frame: int) -> bytes:
        """The encoded frame `frame` (0-based) of video `index`: reads one record."""
        if not 0 <= frame < self._num_frames[index]:
            raise IndexError(f"frame {frame} of a {self._num_frames[index]}-frame video")
        shard = int(self._shard[index])
        reader = self._reader(shard)
        position = int(self._first[index]) + frame
        try:
            return reader.read(position, position + 1)[0]
        except (OSError, RuntimeError, ValueError) as e:
            raise DataError(self.location(index, frame), f"cannot read record ({e})") from None


def read_meta(directory: str) -> dict:
    with open(os.path.join(directory, "meta.json")) as f:
        return json.load(f)


def write_meta(directory: str, meta: dict) -> None:
    storage.write_text(os.path.join(directory, "meta.json"), json.dumps(meta, indent=2))


def layout(meta: dict, split: str) -> int:
    """The record layout of `split` in a folder with this `meta.json` content."""
    return meta.get("layouts", {}).get(split, VIDEO_RECORDS)
