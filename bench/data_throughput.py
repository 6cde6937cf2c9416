"""Training-clip throughput of the input pipeline for each source, and the bytes each clip reads.

Writes a small benchmark dataset (300-frame clips: JPEG frame folders at 340x256, the same frames
as ArrayRecord records of one frame each, and 320x240 mp4 files with GOPs of 1, 12 and 250
frames), then measures for T = 8 and 16:
  - clips/s per core: the training reader (read + TSN sampling + multi-scale crop to 224 + flip)
    called in one thread, per CPU-second of that thread (median of --rounds passes over all
    sources in turn);
  - bytes read from storage per clip, in that loop: the bytes the thread read through read
    system calls (Linux `/proc/thread-self/io` rchar): the JPEG files opened, the ArrayRecord
    records read, the bytes the video demuxer read;
  - clips/s of the whole grain pipeline (batches of 16, wall clock) with 1, 2 and all cores of
    worker processes.
Prints a line per measurement, then one JSON line with every figure, the CPU and the load
average (the worker figures need an otherwise idle machine).

  python bench/data_throughput.py [--videos 8] [--frames 300] [--seconds 5] [--rounds 3]
      [--workers 1 2 16]
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tea_jax.data import create_loader, default_config, records
from tea_jax.data.pipeline import TrainReader, build_source
from tea_jax.data.video import write_video

GOPS = (1, 12, 250)
SOURCES = ("frames", "arrayrecord", *(f"videos_gop{gop}" for gop in GOPS))
_PER_VIDEO = ("id", "label", "shard", "first", "num_frames")


def _frames(seed: int, count: int, width: int, height: int) -> np.ndarray:
    """A textured scene panning across the frame: JPEG sizes like natural video frames."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(
        rng.uniform(0, 255, (24, 32, 3)).astype(np.float32), (2 * width, 2 * height)
    )
    fine = rng.normal(0, 12, (2 * height, 2 * width, 3)).astype(np.float32)
    scene = np.clip(coarse + cv2.GaussianBlur(fine, (3, 3), 0), 0, 255).astype(np.uint8)
    offsets = np.linspace(0, width, count).astype(int)
    return np.stack([scene[height // 4 : height // 4 + height, o : o + width] for o in offsets])


def _repeat_index(directory: str, split: str, copies: int) -> None:
    """Lists every video of the split `copies` times: many examples from few stored videos."""
    path = records.index_path(directory, split)
    with open(path, "rb") as f:
        index = msgpack.unpackb(f.read())
    index.update({key: index[key] * copies for key in _PER_VIDEO})
    with open(path, "wb") as f:
        f.write(msgpack.packb(index))


def write_dataset(root: str, num_videos: int, num_frames: int, sources: list[str]) -> None:
    """Each video stored once per form; the lists name it several times (batches of 16)."""
    copies = -(-64 // num_videos)
    frame_lines, video_lines = [], {gop: [] for gop in GOPS}
    records_dir = os.path.join(root, "records")
    with records.FrameRecordWriter(records_dir, "train", 2) as writer:
        for v in range(num_videos):
            frames = _frames(v, num_frames, 340, 256)
            folder = os.path.join(root, "frames", f"v{v}")
            os.makedirs(folder)
            encoded = [records.encode_jpeg(f) for f in frames]
            for i, data in enumerate(encoded):
                with open(os.path.join(folder, f"img_{i + 1:05d}.jpg"), "wb") as f:
                    f.write(data)
            writer.write(f"v{v}", v % 4, encoded)
            frame_lines += [f"frames/v{v} {num_frames} {v % 4}\n"] * copies
            small = np.stack(
                [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in frames]
            )
            for gop, lines in video_lines.items():
                if f"videos_gop{gop}" in sources:
                    path = os.path.join(root, f"v{v}_gop{gop}.mp4")
                    write_video(path, small, fps=30, gop=gop, lossless=False)
                lines += [f"v{v}_gop{gop}.mp4 {v % 4}\n"] * copies
    _repeat_index(records_dir, "train", copies)
    meta = {"num_classes": 4, "splits": {"train": num_videos * copies}, "layouts": {"train": 2}}
    records.write_meta(records_dir, meta)
    with open(os.path.join(root, "frames.txt"), "w") as f:
        f.writelines(frame_lines)
    for gop, lines in video_lines.items():
        with open(os.path.join(root, f"videos_gop{gop}.txt"), "w") as f:
            f.writelines(lines)


def configs(root: str, sources: list[str]) -> dict:
    base = default_config()
    base.update(root=root, num_classes=4, image_size=224, short_side=256)
    options = {
        "frames": {"source": "frames", "train_list": "frames.txt"},
        "arrayrecord": {"source": "arrayrecord", "root": os.path.join(root, "records")},
        **{
            f"videos_gop{gop}": {"source": "videos", "train_list": f"videos_gop{gop}.txt"}
            for gop in GOPS
        },
    }
    result = {}
    for name in sources:
        cfg = base.copy_and_resolve_references()
        cfg.update(options[name])
        result[name] = cfg
    return result


def _bytes_read() -> int | None:
    """Bytes this thread has read through read system calls (None off Linux)."""
    try:
        with open("/proc/thread-self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar"))
    except OSError:
        return None


def per_core(cfg, num_segments: int, seconds: float) -> tuple[float, float | None]:
    """(clips per CPU-second of the training reader in this thread, bytes read per clip)."""
    source, num_classes = build_source(cfg, "train", "raise")
    reader = TrainReader(
        source, num_classes, num_segments, cfg.image_size, cfg.short_side, False, "raise"
    )
    rng = np.random.default_rng(0)
    reader(0, rng)
    count, start, bytes_before = 0, time.thread_time(), _bytes_read()
    while time.thread_time() - start < seconds:
        element = reader(count % len(source), rng)
        assert element["_ok"], element["_bad"]
        count += 1
    elapsed, bytes_after = time.thread_time() - start, _bytes_read()
    bytes_per_clip = None if bytes_before is None else (bytes_after - bytes_before) / count
    return count / elapsed, bytes_per_clip


def pipeline(cfg, num_segments: int, workers: int, seconds: float) -> float:
    """Clips/s of the grain pipeline with `workers` processes (after the first batch)."""
    cfg = cfg.copy_and_resolve_references()
    cfg.num_workers = workers
    iterator = iter(
        create_loader(
            cfg,
            "train",
            batch_size=16,
            num_segments=num_segments,
            seed=0,
            shard_index=0,
            shard_count=1,
        )
    )
    next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += len(next(iterator)["label"])
    rate = count / (time.perf_counter() - start)
    iterator.close()
    return rate


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8, help="distinct videos")
    parser.add_argument("--frames", type=int, default=300, help="frames per video")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--segments", type=int, nargs="+", default=[8, 16], help="T values")
    parser.add_argument("--rounds", type=int, default=3, help="per-core passes (median)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=sorted({1, 2, os.cpu_count() or 1}),
        help="grain worker counts to measure (default: 1, 2 and all cores)",
    )
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results = []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root, args.videos, args.frames, args.sources)
        cases = [
            (n, cfg, t) for n, cfg in configs(root, args.sources).items() for t in args.segments
        ]
        rates, bytes_per_clip = {(n, t): [] for n, _, t in cases}, {}
        for _ in range(args.rounds):  # interleaved, so that a change of load hits every source
            for name, cfg, t in cases:
                rate, bytes_per_clip[name, t] = per_core(cfg, t, args.seconds)
                rates[name, t].append(rate)
        for name, cfg, t in cases:
            rate = float(np.median(rates[name, t]))
            read = bytes_per_clip[name, t]
            workers = {str(w): pipeline(cfg, t, w, args.seconds) for w in args.workers}
            row = {
                "source": name,
                "T": t,
                "clips_per_sec_per_core": round(rate, 1),
                "clips_per_sec_per_core_range": [
                    round(min(rates[name, t]), 1),
                    round(max(rates[name, t]), 1),
                ],
                "bytes_per_clip": None if read is None else round(read),
                "workers": {w: round(r, 1) for w, r in workers.items()},
            }
            results.append(row)
            scaling = ", ".join(f"{r:.1f} with {w}" for w, r in workers.items())
            print(
                f"{name:16s} T={t:2d}  {rate:7.1f} clips/s/core  "
                f"{(read or 0) / 1e3:8.1f} KB/clip  clips/s: {scaling} workers",
                flush=True,
            )
    summary = {
        "sources": results,
        "cpu": _cpu(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
