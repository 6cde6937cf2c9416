"""Video files through PyAV: an indexed reader that seeks or decodes sequentially, and a writer."""

import bisect
import fractions
import os
from collections.abc import Callable, Iterator, Sequence

import av
import numpy as np

from tea_jax.data.errors import DataError
from tea_jax.data.transforms import resize_short_side

# Decoding this many frames costs about as much as one seek (flush + demux from a keyframe).
_SEEK_COST_FRAMES = 4


class VideoFile:
    """Random access to the frames of one video file.

    Opening demuxes the packets (cheap: no decoding) to learn the frame count, the presentation
    timestamps and the keyframes. `read` then decodes only what the requested frames need: it
    seeks to the keyframe before a frame when that skips more than a few frames, and otherwise
    keeps decoding sequentially. With short GOPs this seeks; with long GOPs it decodes once from
    the start up to the last requested frame.

    Args:
      path: the video file.

    Attributes:
      num_frames: frames in the file.
      frame_rate: frames per second (a Fraction), None when the file does not say.

    Raises:
      DataError: the file is missing, unreadable, has no video stream or no frames.
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.isfile(path):
            raise DataError(path, "video file does not exist")
        try:
            self._container = av.open(path)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise DataError(path, f"cannot open video ({e})") from None
        try:
            self._index()
        except (av.FFmpegError, OSError, ValueError) as e:
            self.close()
            raise DataError(path, f"cannot demux video ({e})") from None
        except DataError:
            self.close()
            raise

    def _index(self) -> None:
        if not self._container.streams.video:
            raise DataError(self.path, "no video stream (or zero frames)")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = 1
        pts, keyframe_pts = [], []
        for packet in self._container.demux(self._stream):
            if packet.size == 0:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframe_pts.append(packet.pts)
        if not pts:
            raise DataError(self.path, "video has zero frames")
        if self._stream.frames > len(pts):
            raise DataError(
                self.path, f"truncated: {len(pts)} of {self._stream.frames} frames present"
            )
        self._seekable = None not in pts
        if self._seekable:
            self._pts = sorted(pts)
            self._frame_of_pts = {p: i for i, p in enumerate(self._pts)}
            self._keyframes = sorted(self._frame_of_pts[p] for p in keyframe_pts) or [0]
        self.num_frames = len(pts)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.frame_rate = fractions.Fraction(rate) if rate else None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Decodes the frames at `indices` (0-based, any order, repeats allowed).

        Returns:
          uint8 RGB frames, shape (len(indices), H, W, 3).

        Raises:
          DataError: an index is out of range or the file is truncated or corrupt.
        """
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0 or wanted[-1] >= self.num_frames:
            raise DataError(self.path, f"frame {wanted[-1]} requested, video has {self.num_frames}")
        try:
            frames = self._read_seeking(wanted) if self._seekable else None
            if frames is None:
                frames = self._read_sequential(wanted)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise DataError(self.path, f"cannot decode video ({e})") from None
        return np.stack([frames[i] for i in indices])

    def _read_seeking(self, wanted: list[int]) -> dict[int, np.ndarray] | None:
        """Decodes `wanted` by timestamps; returns None when the timestamps are inconsistent."""
        frames, position, decoder = {}, None, None
        for target in wanted:
            keyframe = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
            if position is None or keyframe > position + _SEEK_COST_FRAMES:
                self._container.seek(self._pts[keyframe], stream=self._stream, backward=True)
                decoder = self._container.decode(self._stream)
            for frame in decoder:
                index = self._frame_of_pts.get(frame.pts)
                if index is None:
                    return None
                position = index
                if index >= target:
                    break
            else:
                return None
            if position != target:
                return None
            frames[target] = frame.to_ndarray(format="rgb24")
        return frames

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        frames, pending = {}, set(wanted)
        for index, frame in enumerate(self._decode_all(lambda index: index in pending)):
            if frame is not None:
                frames[index] = frame
                pending.discard(index)
                if not pending:
                    return frames
        raise DataError(self.path, f"truncated: frame {min(pending)} of {self.num_frames} missing")

    def _decode_all(self, wanted) -> Iterator[np.ndarray | None]:
        """Decodes from the start; yields frame i as RGB if `wanted(i)`, else None."""
        self._reopen()
        for index, frame in enumerate(self._container.decode(self._stream)):
            if index == self.num_frames:
                return
            yield frame.to_ndarray(format="rgb24") if wanted(index) else None

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every frame in order, decoded sequentially, one in memory at a time.

        Yields:
          uint8 RGB frames (H, W, 3).

        Raises:
          DataError: the file is truncated or corrupt (possibly after some frames).
        """
        for _, frame in self.stream():
            yield frame

    def stream(
        self, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decodes the whole file once, in order, one frame in memory at a time.

        Args:
          wanted: which frame indices to convert to RGB and yield (None: all); the others are
            decoded (the codec needs them) but not converted.

        Yields:
          ``(index, frame)``: uint8 RGB (H, W, 3).

        Raises:
          DataError: the file is truncated or corrupt (possibly after some frames).
        """
        count = 0
        try:
            for index, frame in enumerate(self._decode_all(wanted or (lambda index: True))):
                if frame is not None:
                    yield index, frame
                count += 1
        except (av.FFmpegError, OSError, ValueError) as e:
            raise DataError(self.path, f"cannot decode video ({e})") from None
        if count < self.num_frames:
            raise DataError(self.path, f"truncated: frame {count} of {self.num_frames} missing")

    def _reopen(self) -> None:
        self._container.close()
        self._container = av.open(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = 1


def iter_frames(path: str, short_side: int | None) -> Iterator[np.ndarray]:
    """The frames of a video file one at a time, resized to `short_side` (None: kept).

    Memory stays that of one frame whatever the video's length or resolution; the frames are
    those `VideoFile.read` returns.

    Yields:
      uint8 RGB frames (H, W, 3).

    Raises:
      DataError: the file cannot be read (possibly after some frames were yielded).
    """
    with VideoFile(path) as video:
        for frame in video:
            yield resize_short_side(frame, short_side)


class VideoWriter:
    """Writes RGB frames one at a time as an H.264 mp4.

    Args:
      path: output file (.mp4).
      width, height: frame size, both even.
      fps: frame rate (an int or a Fraction, e.g. a source's `VideoFile.frame_rate`).
      gop: keyframe interval; short GOPs make seeking cheap.
      lossless: lossless H.264 (qp 0) on the YUV 4:2:0 frames, so identical RGB frames decode
        identically wherever they are in the video; otherwise high quality (crf 14).
    """

    def __init__(
        self,
        path: str,
        width: int,
        height: int,
        *,
        fps: int | fractions.Fraction = 12,
        gop: int = 8,
        lossless: bool = True,
    ):
        self._container = av.open(path, "w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.options = {
            "g": str(gop),
            "preset": "fast",
            "tune": "zerolatency",
            **({"qp": "0"} if lossless else {"crf": "14"}),
        }
        self._stream.codec_context.thread_count = 1

    def write(self, frame: np.ndarray) -> None:
        """Appends one uint8 RGB frame (height, width, 3)."""
        self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))

    def close(self) -> None:
        """Flushes the encoder and closes the file."""
        self._container.mux(self._stream.encode())
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(
    path: str, frames: np.ndarray, *, fps: int = 12, gop: int = 8, lossless: bool = True
) -> None:
    """Writes RGB frames (uint8 (T, H, W, 3), H and W even) as an H.264 mp4 (see `VideoWriter`)."""
    _, height, width, _ = frames.shape
    with VideoWriter(path, width, height, fps=fps, gop=gop, lossless=lossless) as writer:
        for frame in frames:
            writer.write(frame)
