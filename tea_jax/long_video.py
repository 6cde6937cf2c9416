"""Actions over time in a long video: a model's scores in sliding windows, and their outputs.

Each window is scored as evaluation scores a video cut to it (`tea_jax.data.windows`), in
batches of the predictor's batch size; the video is decoded once, in order. The outputs are one
JSON line per window, a timeline picture (`tea_jax.timeline`) and the video with each frame's
label drawn on it.
"""

import dataclasses
import json
from collections.abc import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from tea_jax import storage
from tea_jax.data.errors import DataError
from tea_jax.data.video import VideoFile, VideoWriter
from tea_jax.data.windows import Windows, sliding_windows, window_clips
from tea_jax.predictor import Predictor, softmax, top_classes


@dataclasses.dataclass(frozen=True)
class WindowScores:
    """A video's windows and the model's class probabilities in each.

    Attributes:
      path: the video file.
      windows: the windows (frames, fps).
      window, stride: the requested window length and stride in seconds.
      probabilities: float32 (W, C).
      smoothing: windows in the moving average of `smoothed` (1: none).
    """

    path: str
    windows: Windows
    window: float
    stride: float
    probabilities: np.ndarray
    smoothing: int = 1

    @property
    def smoothed(self) -> np.ndarray:
        """(W, C) moving average of `probabilities` over `smoothing` windows (centred; fewer at
        the ends)."""
        return moving_average(self.probabilities, self.smoothing)

    @property
    def duration(self) -> float:
        return self.windows.num_frames / self.windows.fps


def score_windows(
    predictor: Predictor,
    path: str,
    *,
    window: float,
    stride: float,
    smoothing: int = 1,
    progress: bool = False,
) -> WindowScores:
    """Scores every window of a video file.

    Args:
      predictor: the model; its `batch_size` windows are scored per call.
      path: the video file.
      window, stride: seconds (rounded to whole frames).
      smoothing: windows averaged by `WindowScores.smoothed`.
      progress: show a progress bar (windows/s) on stderr.

    Raises:
      DataError: the file cannot be read.
      UserError: bad window settings.
    """
    with VideoFile(path) as video:
        fps = float(video.frame_rate or 0)
        if fps <= 0:
            raise DataError(path, "the video does not state its frame rate")
        windows = sliding_windows(video.num_frames, fps, window, stride)
        indices = windows.clip_indices(predictor.model.num_segments)
        probabilities = np.zeros((len(windows), predictor.model.num_classes), np.float32)
        with tqdm(total=len(windows), unit="window", disable=not progress) as bar:
            for numbers, clips in window_clips(
                video,
                indices,
                short_side=predictor.short_side,
                image_size=predictor.image_size,
                batch_size=predictor.batch_size,
            ):
                probabilities[numbers] = softmax(predictor.logits(clips[:, None]))
                bar.update(len(numbers))
    return WindowScores(path, windows, window, stride, probabilities, smoothing)


def moving_average(values: np.ndarray, count: int) -> np.ndarray:
    """Centred moving average of (W, C) rows over `count` rows; the ends average fewer rows."""
    if count <= 1:
        return values
    kernel = np.ones(count)
    total = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), 0, values)
    return total / np.convolve(np.ones(len(values)), kernel, mode="same")[:, None]


def window_records(
    scores: WindowScores, names: list[str], top_k: int, full_scores: bool = False
) -> Iterator[dict]:
    """One JSON-ready dict per window: times in seconds, top-k (smoothed too when smoothing),
    and all the probabilities with `full_scores`."""
    windows = scores.windows
    smoothed = scores.smoothed if scores.smoothing > 1 else None
    for w, probabilities in enumerate(scores.probabilities):
        record = {
            "video": scores.path,
            "window": w,
            "start": round(float(windows.starts[w] / windows.fps), 4),
            "end": round(float(windows.ends[w] / windows.fps), 4),
            "top": top_classes(probabilities, names, top_k),
        }
        if smoothed is not None:
            record["smoothed_top"] = top_classes(smoothed[w], names, top_k)
        if full_scores:
            record["probabilities"] = [round(float(p), 6) for p in probabilities]
        yield record


def write_records(path: str | None, records: Iterator[dict]) -> None:
    """JSON lines into `path` (stdout when None)."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path is None:
        print(text, end="")
    else:
        storage.write_text(path, text)


def nearest_windows(windows: Windows) -> np.ndarray:
    """int (F,): for each frame, the window whose centre is nearest (ties: the earlier one)."""
    centres = (windows.starts + windows.ends - 1) / 2
    frames = np.arange(windows.num_frames)
    after = np.clip(np.searchsorted(centres, frames), 1, max(len(centres) - 1, 1))
    before = after - 1
    if len(centres) == 1:
        return np.zeros(windows.num_frames, int)
    return np.where(frames - centres[before] <= centres[after] - frames, before, after)


def write_labelled_video(scores: WindowScores, names: list[str], output: str) -> None:
    """The video with each frame's label drawn on it, at the source frame rate.

    A frame takes the top class and probability of the window whose centre is nearest to it
    (`nearest_windows`), from the smoothed probabilities when smoothing. The video is decoded a
    second time, in order, and encoded one frame at a time (frames cropped to even sides).
    """
    probabilities = scores.smoothed
    labels = nearest_windows(scores.windows)
    with VideoFile(scores.path) as video, storage.local_file(output) as local:
        writer = None
        for index, frame in video.stream():
            height, width = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2
            if writer is None:
                writer = VideoWriter(
                    local, width, height, fps=video.frame_rate, gop=30, lossless=False
                )
            top = probabilities[labels[index]]
            best = int(np.argmax(top))
            text = f"{names[best]} {100 * top[best]:.0f}%"
            writer.write(draw_label(frame[:height, :width], text))
        writer.close()


def draw_label(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of the RGB frame with `text` in white on a dark band at the top left (the font
    scales with the frame's height, smaller where the text would not fit its width)."""
    frame = frame.copy()
    scale = max(frame.shape[0] / 480, 0.3)
    thickness = max(1, round(scale * 1.5))
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if width > 0.95 * frame.shape[1]:  # narrow frames: a smaller font, down to a third
        scale = max(scale * 0.95 * frame.shape[1] / width, scale / 3)
        (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(2, round(4 * scale))
    cv2.rectangle(frame, (0, 0), (width + 2 * margin, height + base + 2 * margin), (0, 0, 0), -1)
    cv2.putText(
        frame,
        text,
        (margin, height + margin),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return frame
