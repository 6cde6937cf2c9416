"""TSN frame sampling: which frames of a video form a clip (0-based frame indices)."""

import numpy as np

DENSE_WINDOW = 64


def train_indices(
    num_frames: int, num_segments: int, rng: np.random.Generator, *, dense: bool = False
) -> np.ndarray:
    """Random training clip.

    TSN: the video is cut into `num_segments` equal segments of `avg = F // N` frames and one
    random frame is taken from each. Videos shorter than N frames spread N indices evenly over the
    video (repeating frames). Dense: one window of 64 frames at a random start, stride 64 // N.

    Args:
      num_frames: frames in the video (F >= 1).
      num_segments: frames in the clip (N).
      rng: source of randomness.
      dense: dense sampling instead of TSN.

    Returns:
      int array (N,) of frame indices in [0, F).
    """
    if dense:
        start = rng.integers(max(num_frames - DENSE_WINDOW + 1, 1))
        return _dense(num_frames, num_segments, start)
    average = num_frames // num_segments
    if average > 0:
        return np.arange(num_segments) * average + rng.integers(average, size=num_segments)
    return np.arange(num_segments) * num_frames // num_segments


def test_indices(
    num_frames: int,
    num_segments: int,
    num_clips: int = 1,
    *,
    dense: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Evaluation clips.

    Fixed (`rng` None): clip c takes the frame at offset (c + 0.5) / K of each segment, so a
    single clip takes the centre of each segment, `int(F / N / 2 + F / N * k)`. Dense: K windows
    of 64 frames with starts spread the same way over the video. Random (`rng` given): K
    independent training clips (`train_indices`), the released code's multi-clip protocol.

    Args:
      num_frames: frames in the video (F >= 1).
      num_segments: frames per clip (N).
      num_clips: clips (K).
      dense: dense sampling instead of TSN.
      rng: draws random clips; None: fixed offsets.

    Returns:
      int array (K, N) of frame indices in [0, F).
    """
    if rng is not None:
        return np.stack(
            [train_indices(num_frames, num_segments, rng, dense=dense) for _ in range(num_clips)]
        )
    offsets = (np.arange(num_clips) + 0.5) / num_clips
    if dense:
        starts = (offsets * max(num_frames - DENSE_WINDOW + 1, 1)).astype(int)
        return np.stack([_dense(num_frames, num_segments, s) for s in starts])
    segment = num_frames / num_segments
    positions = segment * (np.arange(num_segments)[None, :] + offsets[:, None])
    return np.minimum(positions.astype(int), num_frames - 1)


def _dense(num_frames: int, num_segments: int, start: int) -> np.ndarray:
    stride = max(DENSE_WINDOW // num_segments, 1)
    return (start + stride * np.arange(num_segments)) % num_frames
