"""`prepare frames` on videos as downloaded: a worker's peak memory, and videos per second.

Makes the videos with PyAV (h264 mp4, a textured scene panning across the frame), then runs
`python -m tea_jax.data.prepare frames --short_side 256` as a child process and reads the peak
resident memory of the largest process it ran (`wait4`'s `ru_maxrss`: the CLI and its worker
processes):
  - memory: one --long_seconds clip at --long_size (default 10 s of 1920x1080 at 30 fps),
    `--workers 1`;
  - throughput: --videos clips of --seconds at --size, `--workers W` for each W of --workers,
    the runs side by side (W1, W2, W1, W2, ... for --rounds rounds) so that they share the
    machine's load; videos/s is the median over rounds of videos / wall-clock seconds of the
    command (including its start, about 3 s: use enough videos).
Prints a line per measurement, then one JSON line with every figure and the load average.
`--code DIR` runs the CLI of another checkout (e.g. an older version, to compare).

  python bench/prepare_throughput.py [--videos 24] [--seconds 10] [--size 340x256]
      [--workers 1 2] [--rounds 2] [--long_seconds 10] [--long_size 1920x1080] [--code .]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_video(path: str, seconds: float, width: int, height: int, seed: int) -> None:
    """An h264 mp4 at 30 fps, GOP 250 (as YouTube-style downloads): a textured pan."""
    rng = np.random.default_rng(seed)
    scene = cv2.resize(rng.uniform(0, 255, (18, 32, 3)).astype(np.uint8), (2 * width, height))
    count = max(1, round(30 * seconds))
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": "250", "preset": "ultrafast", "crf": "23"}
        for t in range(count):
            offset = int(width * t / count)
            frame = np.ascontiguousarray(scene[:, offset : offset + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def run_prepare(code: str, videos: str, list_path: str, output: str, workers: int) -> dict:
    """Runs `prepare frames` in a child process.

    Returns:
      its wall-clock seconds, the CPU seconds of it and its worker processes, and the peak
      RSS of the largest of them.
    """
    command = [
        sys.executable,
        "-m",
        "tea_jax.data.prepare",
        "frames",
        *("--list", list_path, "--root", videos, "--output", output),
        *("--short_side", "256", "--workers", str(workers)),
    ]
    env = {**os.environ, "PYTHONPATH": code}
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    log = proc.stdout.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"prepare failed ({proc.returncode}):\n{log[-3000:]}")
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _size(text: str) -> tuple[int, int]:
    width, height = text.split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", default="340x256", help="WxH of the throughput videos")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--long_seconds", type=float, default=10)
    parser.add_argument("--long_size", default="1920x1080", help="WxH of the memory clip")
    parser.add_argument("--code", default=str(ROOT), help="checkout whose CLI runs")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="prepare_bench_")
    try:
        videos = os.path.join(work, "videos")
        os.makedirs(videos)
        width, height = _size(args.long_size)
        make_video(os.path.join(videos, "long.mp4"), args.long_seconds, width, height, 0)
        with open(os.path.join(work, "long.txt"), "w") as f:
            f.write("long.mp4 0\n")
        width, height = _size(args.size)
        with open(os.path.join(work, "many.txt"), "w") as f:
            for i in range(args.videos):
                make_video(os.path.join(videos, f"v{i:03d}.mp4"), args.seconds, width, height, i)
                f.write(f"v{i:03d}.mp4 {i % 4}\n")

        code = os.path.abspath(args.code)
        memory = run_prepare(
            code, videos, os.path.join(work, "long.txt"), os.path.join(work, "out_long"), 1
        )
        print(
            f"memory: {args.long_seconds:g} s {args.long_size} clip, --workers 1: peak RSS "
            f"{memory['peak_rss_mb']:.0f} MB ({memory['seconds']:.1f} s)",
            flush=True,
        )
        runs = {w: [] for w in args.workers}
        for r in range(args.rounds):
            for w in args.workers:
                output = os.path.join(work, f"out_{w}_{r}")
                result = run_prepare(code, videos, os.path.join(work, "many.txt"), output, w)
                shutil.rmtree(output)
                runs[w].append(result)
                print(
                    f"throughput: --workers {w} round {r}: {args.videos} videos in "
                    f"{result['seconds']:.1f} s = {args.videos / result['seconds']:.2f} videos/s,"
                    f" {result['cpu_seconds'] / args.videos:.2f} CPU s per video, peak RSS "
                    f"{result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        summary = {
            "code": code,
            "long_clip": {"seconds": args.long_seconds, "size": args.long_size, **memory},
            "videos": {"count": args.videos, "seconds": args.seconds, "size": args.size},
            "videos_per_sec": {
                w: statistics.median(args.videos / x["seconds"] for x in rows)
                for w, rows in runs.items()
            },
            "cpu_seconds_per_video": {
                w: statistics.median(x["cpu_seconds"] / args.videos for x in rows)
                for w, rows in runs.items()
            },
            "peak_rss_mb": {w: max(x["peak_rss_mb"] for x in rows) for w, rows in runs.items()},
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
