"""A long video whose true class changes at known times: synthetic videos concatenated.

  python -m tea_jax.data.synthetic_long --output data/synthetic_long.mp4 [--videos 12]

Writes `--videos` validation videos of the synthetic dataset from `--first` on
(`tea_jax.data.synthetic`, default options; consecutive videos are of different class pairs, and
the first or second class of their pair alternates every round of pairs, so that all classes
appear), one after another into one mp4 at 12 frames per second, and beside it `OUTPUT.json`
(`.mp4` replaced): the class of each segment and its start and end in seconds. Sliding-window
prediction (`python -m tea_jax.predict --window`) should find the changes at those times.
"""

import argparse
import json
import os

import numpy as np

from tea_jax.data import synthetic
from tea_jax.data.video import write_video

FPS = 12


def long_video(
    num_videos: int, first: int = 0, options: synthetic.SyntheticOptions = synthetic.DEFAULT_OPTIONS
) -> tuple[np.ndarray, list[dict]]:
    """The frames of `num_videos` concatenated validation videos and their segments.

    Returns:
      ``(uint8 frames (F, size, size, 3), [{class, label, start, end}])``, times in seconds at
      `FPS`.
    """
    names = synthetic.TASKS[options.task][0]
    num_pairs = len(names) // 2
    videos, segments, start = [], [], 0
    for index in range(first, first + num_videos):
        pair, frames = synthetic.generate_pair(options, "val", index)
        reverse = (index // num_pairs) % 2
        label = 2 * pair + reverse
        videos.append(frames[::-1] if reverse else frames)
        end = start + len(frames)
        segments.append({"class": names[label], "label": label, "start": start, "end": end})
        start = end
    for segment in segments:
        segment["start"], segment["end"] = segment["start"] / FPS, segment["end"] / FPS
    return np.concatenate(videos), segments


def write_long_video(path: str, num_videos: int, first: int = 0) -> list[dict]:
    """Writes `long_video` to `path` (lossless H.264) and its segments to the `.json` beside it.

    Returns:
      The segments.
    """
    frames, segments = long_video(num_videos, first)
    write_video(path, frames, fps=FPS)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(segments, f, indent=1)
    return segments


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the mp4 to write")
    parser.add_argument("--videos", type=int, default=12, help="videos concatenated")
    parser.add_argument("--first", type=int, default=0, help="first validation video")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    segments = write_long_video(args.output, args.videos, args.first)
    print(
        f"wrote {args.output}: {len(segments)} videos, {segments[-1]['end']:.1f} s; classes and "
        f"times in {os.path.splitext(args.output)[0]}.json"
    )


if __name__ == "__main__":
    main()
