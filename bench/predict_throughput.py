"""Throughput and memory of prediction: windows over a long video, and many videos.

Writes test videos (a smooth image drifting sideways, H.264 with keyframes every 250 frames) and
measures with a model checkpoint:
  - long video: for each of --minutes (default 1 and 10), one process scores every window
    (`tea_jax.long_video.score_windows`, --window/--stride seconds, --batch windows per call);
    it reports windows/s and frames decoded/s of the scoring (after a warm-up call that
    compiles), and the parent reads that process's peak resident memory (ru_maxrss via wait4);
  - many videos: --videos clips of --clip-seconds, labelled by the single-video loop (one
    `Predictor` call per file, decoding in the main process, as `python -m tea_jax.predict
    a.mp4 b.mp4 ...`) and by the list path (`tea_jax.video_lists.predict_videos`, --workers
    decoding processes, --batch videos per call), both after a warm-up, in videos/s; each list
    run starts its workers anew, and the warm-up run of one video says how long that takes.
Prints a line per measurement, then one JSON line with every figure, the CPU count and the load
average (the figures need an otherwise idle machine).

  python bench/predict_throughput.py --checkpoint runs/synthetic_tea8/model [--minutes 1 10]
      [--size 640x360] [--fps 30] [--window 2] [--stride 1] [--batch 8] [--videos 64]
      [--clip-seconds 4] [--workers 2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tea_jax import long_video, video_lists
from tea_jax.data.video import VideoWriter
from tea_jax.predictor import Predictor


def write_test_video(path: str, frames: int, width: int, height: int, fps: int, seed=0) -> None:
    """A smooth random image drifting one pixel per frame, written one frame at a time."""
    cells = np.random.default_rng(seed).integers(0, 256, (9, 32, 3), dtype=np.uint8)
    base = cv2.resize(cells, (2 * width, height), interpolation=cv2.INTER_LINEAR)
    with VideoWriter(path, width, height, fps=fps, gop=250, lossless=False) as writer:
        for i in range(frames):
            shift = i % width
            writer.write(base[:, shift : shift + width])


def _predictor(args, batch_size: int) -> Predictor:
    predictor = Predictor(args.checkpoint, batch_size=batch_size)
    t, s = predictor.model.num_segments, predictor.image_size
    predictor.logits(np.zeros((batch_size, 1, t, s, s, 3), np.uint8))  # compiles
    return predictor


def child(args) -> None:
    """Scores the windows of one video; prints {windows, frames, seconds} as JSON."""
    predictor = _predictor(args, args.batch)
    start = time.perf_counter()
    scores = long_video.score_windows(predictor, args.child, window=args.window, stride=args.stride)
    seconds = time.perf_counter() - start
    frames = int(scores.windows.clip_indices(predictor.model.num_segments).max()) + 1
    print(json.dumps({"windows": len(scores.windows), "frames": frames, "seconds": seconds}))


def long_videos(args, folder: str) -> list[dict]:
    width, height = map(int, args.size.split("x"))
    results = []
    for minutes in args.minutes:
        path = os.path.join(folder, f"long_{minutes:g}min.mp4")
        write_test_video(path, round(minutes * 60 * args.fps), width, height, args.fps)
        command = [sys.executable, __file__, "--child", path, "--checkpoint", args.checkpoint]
        command += ["--window", str(args.window), "--stride", str(args.stride)]
        command += ["--batch", str(args.batch)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if status:
            raise SystemExit(f"{' '.join(command)} failed")
        result = json.loads(output.splitlines()[-1])
        result.update(
            minutes=minutes,
            peak_rss_mb=usage.ru_maxrss / 1024,
            windows_per_s=result["windows"] / result["seconds"],
            frames_decoded_per_s=result["frames"] / result["seconds"],
        )
        print(
            f"{minutes:g} min {args.size} at {args.fps} fps: {result['windows']} windows, "
            f"{result['windows_per_s']:.1f} windows/s, {result['frames_decoded_per_s']:.0f} "
            f"frames decoded/s, peak RSS {result['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        results.append(result)
    return results


def many_videos(args, folder: str) -> dict:
    paths = []
    for i in range(args.videos):
        paths.append(os.path.join(folder, f"clip{i:04d}.mp4"))
        write_test_video(paths[-1], round(args.clip_seconds * args.fps), 320, 240, args.fps, i)
    single = _predictor(args, 1)
    single(paths[0])
    start = time.perf_counter()
    for path in paths:
        single(path)
    loop = len(paths) / (time.perf_counter() - start)
    batched = _predictor(args, args.batch)
    start = time.perf_counter()
    video_lists.predict_videos(
        batched, paths[:1], video_lists.Output(os.path.join(folder, "warm.jsonl"), 5, False),
        workers=args.workers, progress=False,
    )  # fmt: skip
    startup = time.perf_counter() - start
    start = time.perf_counter()
    scored, failed = video_lists.predict_videos(
        batched, paths, video_lists.Output(os.path.join(folder, "out.jsonl"), 5, False),
        workers=args.workers, progress=False,
    )  # fmt: skip
    listed = len(paths) / (time.perf_counter() - start)
    assert scored == len(paths) and not failed
    print(
        f"{len(paths)} videos of {args.clip_seconds:g} s 320x240: single-video loop "
        f"{loop:.2f} videos/s, list path ({args.workers} workers, batch {args.batch}) "
        f"{listed:.2f} videos/s ({listed / loop:.2f}x); a run of one video takes {startup:.1f} s "
        "(starting the workers)",
        flush=True,
    )
    return {
        "videos": len(paths),
        "loop_videos_per_s": loop,
        "list_videos_per_s": listed,
        "list_one_video_s": startup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--minutes", type=float, nargs="*", default=[1, 10])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as folder:
        result = {
            "long": long_videos(args, folder) if args.minutes else [],
            "many": many_videos(args, folder) if args.videos else None,
            "size": args.size,
            "fps": args.fps,
            "window": args.window,
            "stride": args.stride,
            "batch": args.batch,
            "workers": args.workers,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
