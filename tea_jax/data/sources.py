"""Random-access video sources: frame folders, video files, ArrayRecord shards and TFDS.

A source maps an index to a `Clip` (label, frame count and a `read(indices)` that decodes only the
requested frames). Sources are picklable so grain can ship them to worker processes; files are
opened lazily in the process that reads them.
"""

import os
from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

from tea_jax.data import records
from tea_jax.data.errors import DataError
from tea_jax.data.listfiles import Entry
from tea_jax.data.transforms import resize_short_side
from tea_jax.data.video import VideoFile, iter_frames

cv2.setNumThreads(1)


class Clip(Protocol):
    label: int
    num_frames: int

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 RGB frames (len(indices), H, W, 3)."""


class Source(Protocol):
    def __len__(self) -> int: ...

    def name(self, index: int) -> str:
        """What error messages call example `index` (a path or a record id)."""

    def open(self, index: int) -> Clip: ...


def decode_image(data: bytes | memoryview, name: str) -> np.ndarray:
    """Decodes a JPEG/PNG into uint8 RGB (H, W, 3); truncated JPEGs are errors, not grey."""
    if bytes(data[:2]) == b"\xff\xd8" and bytes(data[-16:]).rstrip(b"\0")[-2:] != b"\xff\xd9":
        raise DataError(name, "truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(name, "cannot decode image (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_unique(indices: Sequence[int], decode, name: str) -> np.ndarray:
    """Decodes each distinct index once; frames (len(indices), H, W, 3)."""
    cache = {i: decode(i) for i in sorted(set(int(i) for i in indices))}
    shapes = {f.shape for f in cache.values()}
    if len(shapes) > 1:
        raise DataError(name, f"frames of different sizes {sorted(shapes)}")
    return np.stack([cache[int(i)] for i in indices])


class FrameFolder:
    """A folder of frames named by a template with 1-based numbering."""

    def __init__(self, entry: Entry, template: str):
        self.name, self.label, self.num_frames = entry.path, entry.label, entry.num_frames
        self._template = template
        if not os.path.isdir(self.name):
            raise DataError(self.name, "frame folder does not exist")
        last = self._path(self.num_frames - 1)
        if not os.path.isfile(last):
            raise DataError(self.name, f"list says {self.num_frames} frames but {last} is missing")

    def _path(self, index: int) -> str:
        return os.path.join(self.name, self._template.format(index + 1))

    def encoded(self, index: int) -> bytes:
        """The file of frame `index` (0-based), as stored."""
        path = self._path(index)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise DataError(path, f"cannot read frame ({e.strerror})") from None

    def _decode(self, index: int) -> np.ndarray:
        return decode_image(self.encoded(index), self._path(index))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return _read_unique(indices, self._decode, self.name)


class EncodedFrames:
    """A clip held in memory as encoded images (one layout-1 ArrayRecord or TFDS record)."""

    def __init__(self, name: str, label: int, frames: Sequence[bytes]):
        self.name, self.label, self._frames = name, label, frames
        self.num_frames = len(frames)
        if not frames:
            raise DataError(name, "record has zero frames")

    def _decode(self, index: int) -> np.ndarray:
        return decode_image(self._frames[index], f"{self.name} frame {index}")

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return _read_unique(indices, self._decode, self.name)


class VideoClip:
    """A video file; closed after each `read`."""

    def __init__(self, entry: Entry):
        self.name, self.label = entry.path, entry.label
        self._video = VideoFile(entry.path)
        self.num_frames = self._video.num_frames

    def read(self, indices: Sequence[int]) -> np.ndarray:
        with self._video:
            return self._video.read(indices)


class FrameFolderSource:
    """Frame folders from a list file (`path num_frames label`)."""

    def __init__(self, entries: Sequence[Entry], template: str):
        self._entries, self._template = list(entries), template

    def __len__(self) -> int:
        return len(self._entries)

    def name(self, index: int) -> str:
        return self._entries[index].path

    def open(self, index: int) -> FrameFolder:
        return FrameFolder(self._entries[index], self._template)


class VideoFileSource:
    """Video files from a list file (`path label`) or class folders."""

    def __init__(self, entries: Sequence[Entry]):
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def name(self, index: int) -> str:
        return self._entries[index].path

    def open(self, index: int) -> VideoClip:
        return VideoClip(self._entries[index])


class RecordFrames:
    """A video of a layout-2 ArrayRecord split: reads the records of the requested frames only."""

    def __init__(self, reader: records.FrameRecordReader, index: int):
        self._reader, self._index = reader, index
        self._id, self.label, self.num_frames = reader.video(index)

    @property
    def name(self) -> str:
        return f"{self._id} ({self._reader.location(self._index, 0)})"

    def _decode(self, frame: int) -> np.ndarray:
        data = self._reader.frame(self._index, frame)
        try:
            return decode_image(data, "")
        except DataError as e:  # named here: the record's location is only formatted if needed
            raise DataError(self._reader.location(self._index, frame), e.reason) from None

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return _read_unique(indices, self._decode, self.name)


class ArrayRecordSource:
    """A split written by `tea_jax.data.prepare arrayrecord`: one record per frame (layout 2).

    Args:
      directory: the folder of the shards, their index and `meta.json`.
      split: split name.
    """

    def __init__(self, directory: str, split: str):
        self._directory, self._split = directory, split
        self._reader = records.FrameRecordReader(directory, split)

    def __len__(self) -> int:
        return len(self._reader)

    def name(self, index: int) -> str:
        video_id = self._reader.video(index)[0]
        return f"{video_id} ({records.index_path(self._directory, self._split)} video {index})"

    def open(self, index: int) -> RecordFrames:
        return RecordFrames(self._reader, index)


class VideoRecordSource:
    """Layout-1 shards (one record per video), written before layout 2."""

    def __init__(self, paths: Sequence[str]):
        self._paths = list(paths)
        self._reader = records.open_shards(self._paths)

    def __len__(self) -> int:
        return len(self._reader)

    def __getstate__(self):
        return {"_paths": self._paths}

    def __setstate__(self, state):
        self.__init__(state["_paths"])

    def name(self, index: int) -> str:
        return f"record {index} of {os.path.dirname(self._paths[0])}"

    def open(self, index: int) -> EncodedFrames:
        try:
            example = records.decode(self._reader[index])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(self.name(index), f"cannot parse record ({e})") from None
        name = f"{example['id']} ({self.name(index)})"
        return EncodedFrames(name, int(example["label"]), example["frames"])


class TfdsSource:
    """A prepared TFDS dataset of this package's builders, read with `tfds.data_source`."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        import tensorflow_datasets as tfds

        self._args = (name, split, data_dir)
        self._source = tfds.data_source(name, split=split, data_dir=data_dir)

    def __len__(self) -> int:
        return len(self._source)

    def __getstate__(self):
        return {"_args": self._args}

    def __setstate__(self, state):
        self.__init__(*state["_args"])

    def name(self, index: int) -> str:
        return f"{self._args[0]}[{self._args[1]}] record {index}"

    def open(self, index: int) -> EncodedFrames:
        example = self._source[index]
        video_id = example["id"].decode() if isinstance(example["id"], bytes) else example["id"]
        name = f"{video_id} ({self.name(index)})"
        return EncodedFrames(name, int(example["label"]), list(example["frames"]))


def jpeg_frames(
    entry: Entry, template: str | None, short_side: int | None, quality: int
) -> list[bytes]:
    """Every frame of a frame folder or video file as JPEG bytes: what a record stores.

    Args:
      entry: the folder (with `num_frames`) or the video file.
      template: frame file names of a folder; None: `entry` is a video file.
      short_side: resize frames to this short side; None keeps them (a folder's files are then
        copied byte for byte).
      quality: JPEG quality of re-encoded frames.

    Raises:
      DataError: a frame or the video cannot be read.
    """
    if template is None:
        return [records.encode_jpeg(f, quality) for f in iter_frames(entry.path, short_side)]
    folder = FrameFolder(entry, template)
    if short_side is None:
        return [folder.encoded(i) for i in range(folder.num_frames)]
    return [
        records.encode_jpeg(resize_short_side(folder.read([i])[0], short_side), quality)
        for i in range(folder.num_frames)
    ]
