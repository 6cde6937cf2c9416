"""A long video whose true class changes at known times: synthetic videos concatenated.

  python -m tea_jax.data.synthetic_long --output data/synthetic_long.mp4 [--segments 10]
      [--per-segment 2]

Writes `--segments` segments of the synthetic dataset's validation videos (`--per-segment`
videos of one class each, see `long_video`) one after another into one mp4 at 12 frames per
second, and beside it `OUTPUT.json` (`.mp4` replaced): the class of each segment and its start
and end in seconds. Sliding-window prediction (`python -m tea_jax.predict --window`) should find
the changes at those times.
"""

import argparse
import json
import os

import numpy as np

from tea_jax.data import synthetic
from tea_jax.data.video import write_video

FPS = 12


def long_video(
    num_segments: int,
    per_segment: int = 2,
    first: int = 0,
    options: synthetic.SyntheticOptions = synthetic.DEFAULT_OPTIONS,
) -> tuple[np.ndarray, list[dict]]:
    """The frames of `num_segments` segments of `per_segment` validation videos of one class.

    Segment k (counting from `first`) shows class pair ``k % P`` of the task's P pairs, in its
    first class in even rounds of P segments and its second in odd ones, so consecutive segments
    differ and every class appears; its videos are distinct validation videos of that pair
    (different shapes and colours: a cut between them, the class unchanged).

    Returns:
      ``(uint8 frames (F, size, size, 3), [{class, label, start, end}])``, times in seconds at
      `FPS`.
    """
    names = synthetic.TASKS[options.task][0]
    num_pairs = len(names) // 2
    videos, segments, start = [], [], 0
    for k in range(first, first + num_segments):
        pair, round_ = k % num_pairs, k // num_pairs
        reverse = round_ % 2
        for j in range(per_segment):
            index = pair + num_pairs * (round_ * per_segment + j)
            frames = synthetic.generate_pair(options, "val", index)[1]
            videos.append(frames[::-1] if reverse else frames)
        end = start + sum(len(v) for v in videos[-per_segment:])
        label = 2 * pair + reverse
        segments.append({"class": names[label], "label": label, "start": start, "end": end})
        start = end
    for segment in segments:
        segment["start"], segment["end"] = segment["start"] / FPS, segment["end"] / FPS
    return np.concatenate(videos), segments


def write_long_video(
    path: str, num_segments: int, per_segment: int = 2, first: int = 0
) -> list[dict]:
    """Writes `long_video` to `path` (lossless H.264) and its segments to the `.json` beside it.

    Returns:
      The segments.
    """
    frames, segments = long_video(num_segments, per_segment, first)
    write_video(path, frames, fps=FPS)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(segments, f, indent=1)
    return segments


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the mp4 to write")
    parser.add_argument("--segments", type=int, default=10, help="segments of one class")
    parser.add_argument("--per-segment", type=int, default=2, help="videos in each segment")
    parser.add_argument("--first", type=int, default=0, help="first segment")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    segments = write_long_video(args.output, args.segments, args.per_segment, args.first)
    print(
        f"wrote {args.output}: {len(segments)} segments, {segments[-1]['end']:.1f} s; classes and "
        f"times in {os.path.splitext(args.output)[0]}.json"
    )


if __name__ == "__main__":
    main()
