"""Training-clip throughput of the input pipeline for each source.

Writes a small benchmark dataset (300-frame clips: JPEG frame folders at 340x256, the same frames
as ArrayRecord records, and 320x240 mp4 files with GOPs of 1, 12 and 250 frames), then measures:
  - clips/s per core: the training reader (read + TSN sampling + multi-scale crop to 224 + flip)
    called in one thread, per CPU-second of that thread, for T = 8 and 16;
  - clips/s of the whole grain pipeline with --workers worker processes, batches of 16.

  python bench/data_throughput.py [--videos 8] [--frames 300] [--workers 2] [--seconds 5]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tea_jax.data import create_loader, default_config, records
from tea_jax.data.pipeline import TrainReader, build_source
from tea_jax.data.video import write_video


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


def write_dataset(root: str, num_videos: int, num_frames: int) -> None:
    copies = -(-64 // num_videos)
    frame_lines, video_lines = [], {1: [], 12: [], 250: []}
    with records.ShardedWriter(os.path.join(root, "records"), "train", 2) as writer:
        for v in range(num_videos):
            frames = _frames(v, num_frames, 340, 256)
            folder = os.path.join(root, "frames", f"v{v}")
            os.makedirs(folder)
            encoded = [records.encode_jpeg(f) for f in frames]
            for i, data in enumerate(encoded):
                with open(os.path.join(folder, f"img_{i + 1:05d}.jpg"), "wb") as f:
                    f.write(data)
            record = records.encode(f"v{v}", v % 4, encoded)
            for _ in range(copies):  # enough examples for batches of 16 from few files
                writer.write(record)
            frame_lines += [f"frames/v{v} {num_frames} {v % 4}\n"] * copies
            small = np.stack(
                [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in frames]
            )
            for gop, lines in video_lines.items():
                write_video(
                    os.path.join(root, f"v{v}_gop{gop}.mp4"), small, fps=30, gop=gop, lossless=False
                )
                lines += [f"v{v}_gop{gop}.mp4 {v % 4}\n"] * copies
    records.write_meta(
        os.path.join(root, "records"), {"num_classes": 4, "splits": {"train": num_videos}}
    )
    with open(os.path.join(root, "frames.txt"), "w") as f:
        f.writelines(frame_lines)
    for gop, lines in video_lines.items():
        with open(os.path.join(root, f"videos_gop{gop}.txt"), "w") as f:
            f.writelines(lines)


def configs(root: str) -> dict:
    base = default_config()
    base.update(root=root, num_classes=4, image_size=224, short_side=256)
    sources = {
        "frames (JPEG folders)": {"source": "frames", "train_list": "frames.txt"},
        "arrayrecord": {"source": "arrayrecord", "root": os.path.join(root, "records")},
        **{
            f"videos (mp4, GOP {gop})": {"source": "videos", "train_list": f"videos_gop{gop}.txt"}
            for gop in (1, 12, 250)
        },
    }
    result = {}
    for name, options in sources.items():
        cfg = base.copy_and_resolve_references()
        cfg.update(options)
        result[name] = cfg
    return result


def per_core(cfg, num_segments: int, seconds: float) -> float:
    """Clips per CPU-second of the training reader in this thread (robust to other load)."""
    source, num_classes = build_source(cfg, "train", "raise")
    reader = TrainReader(
        source, num_classes, num_segments, cfg.image_size, cfg.short_side, False, "raise"
    )
    rng = np.random.default_rng(0)
    reader(0, rng)
    count, start = 0, time.thread_time()
    while time.thread_time() - start < seconds:
        element = reader(count % len(source), rng)
        assert element["_ok"], element["_bad"]
        count += 1
    return count / (time.thread_time() - start)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--segments", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results = []
    with tempfile.TemporaryDirectory() as root:
        write_dataset(root, args.videos, args.frames)
        for name, cfg in configs(root).items():
            for t in args.segments:
                row = {
                    "source": name,
                    "T": t,
                    "clips_per_sec_per_core": per_core(cfg, t, args.seconds),
                }
                row[f"clips_per_sec_{args.workers}_workers"] = pipeline(
                    cfg, t, args.workers, args.seconds
                )
                results.append(row)
                print(
                    f"{name:24s} T={t:2d}  {row['clips_per_sec_per_core']:7.1f} clips/s/core  "
                    f"{row[f'clips_per_sec_{args.workers}_workers']:7.1f} clips/s with "
                    f"{args.workers} workers",
                    flush=True,
                )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
