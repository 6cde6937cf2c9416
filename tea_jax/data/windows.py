"""Sliding windows over a long video and their clips, assembled from one pass of decoding.

A window is a span of consecutive frames; its clip is what evaluation's efficient protocol takes
from a video cut to that span: the centres of T equal segments (`sampling.test_indices`),
resized and centre-cropped (`transforms`). `window_clips` decodes the video once, in order,
preprocesses each frame a clip needs once, shares it between the overlapping windows that use
it, and drops it once the last of them is assembled: memory holds about
``window / stride + batch`` clips, whatever the video's length or resolution.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from tea_jax.data import sampling, transforms
from tea_jax.data.video import VideoFile
from tea_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Windows:
    """Windows over a video of `num_frames` frames at `fps`.

    Attributes:
      starts: int (W,) first frame of each window.
      ends: int (W,) one past the last frame.
      fps: frames per second of the video.
      num_frames: frames in the video.
    """

    starts: np.ndarray
    ends: np.ndarray
    fps: float
    num_frames: int

    def __len__(self) -> int:
        return len(self.starts)

    def clip_indices(self, num_segments: int) -> np.ndarray:
        """int (W, T): the frames of each window's clip (segment centres), in the video."""
        return np.stack(
            [
                start + sampling.test_indices(end - start, num_segments)[0]
                for start, end in zip(self.starts, self.ends, strict=True)
            ]
        )


def sliding_windows(num_frames: int, fps: float, window: float, stride: float) -> Windows:
    """Windows of `window` seconds every `stride` seconds, rounded to whole frames.

    Windows start at frame ``k * stride_frames`` and lie inside the video; a video shorter than
    one window is one window over all its frames. Frames after the last window's end (less than
    a stride) belong to no window.

    Raises:
      ConfigError: `window` or `stride` is not positive.
    """
    if not window > 0 or not stride > 0:
        raise ConfigError(
            f"window ({window} s) and stride ({stride} s) must be positive",
            hint="e.g. --window 2.0 --stride 1.0",
        )
    length = max(1, round(window * fps))
    step = max(1, round(stride * fps))
    if num_frames <= length:
        return Windows(np.array([0]), np.array([num_frames]), fps, num_frames)
    starts = np.arange(0, num_frames - length + 1, step)
    return Windows(starts, starts + length, fps, num_frames)


def center_crop(frame: np.ndarray, short_side: int | None, size: int) -> np.ndarray:
    """Evaluation's single view of a frame: resized to `short_side`, the central `size` square.

    The same as `tea_jax.data.pipeline.EvalReader` with one crop, one frame at a time.
    """
    height, width = frame.shape[:2]
    box = transforms.center_crop_box(*transforms.scaled_size(width, height, short_side), size)
    return transforms.crop_resize(frame[None], box, short_side, size)[0]


def window_clips(
    video: VideoFile,
    indices: np.ndarray,
    *,
    short_side: int | None,
    image_size: int,
    batch_size: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The windows' clips in batches, from one in-order pass of decoding.

    Args:
      video: the open video.
      indices: int (W, T) frames of each window's clip (`Windows.clip_indices`), windows in
        order of their last frame.
      short_side, image_size: evaluation's preprocessing (`center_crop`).
      batch_size: windows per batch (the last batch may be smaller).

    Yields:
      ``(window numbers (b,), clips uint8 (b, T, image_size, image_size, 3))``.

    Raises:
      DataError: the file cannot be decoded (possibly after some batches).
    """
    users: dict[int, list[tuple[int, int]]] = {}
    for window, row in enumerate(indices):
        for slot, frame in enumerate(row):
            users.setdefault(int(frame), []).append((window, slot))
    last_frame = indices.max(axis=1)
    clips: dict[int, np.ndarray] = {}
    ready: list[int] = []
    done = 0
    for index, frame in video.stream(lambda i: i in users):
        view = center_crop(frame, short_side, image_size)
        for window, slot in users.pop(index):
            if window not in clips:
                clips[window] = np.empty((indices.shape[1], *view.shape), np.uint8)
            clips[window][slot] = view
        while done < len(indices) and last_frame[done] <= index:
            ready.append(done)
            done += 1
        while len(ready) >= batch_size:
            batch, ready = ready[:batch_size], ready[batch_size:]
            yield np.array(batch), np.stack([clips.pop(w) for w in batch])
        if done == len(indices):
            break
    if ready:
        yield np.array(ready), np.stack([clips.pop(w) for w in ready])
