"""bench/data_throughput.py runs end to end on a tiny dataset and ends with one JSON line."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_data_throughput_json_line():
    command = [
        sys.executable,
        str(ROOT / "bench" / "data_throughput.py"),
        *(
            "--videos",
            "2",
            "--frames",
            "12",
            "--seconds",
            "0.3",
            "--segments",
            "4",
            "--rounds",
            "1",
        ),
        *("--workers", "0", "--sources", "frames", "arrayrecord"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(row["source"], row["T"]) for row in summary["sources"]] == [
        ("frames", 4),
        ("arrayrecord", 4),
    ]
    for row in summary["sources"]:
        assert row["clips_per_sec_per_core"] > 0 and row["workers"]["0"] > 0
    frames, arrayrecord = (row["bytes_per_clip"] for row in summary["sources"])
    if frames is not None:  # Linux: both read the same 4 JPEGs, ArrayRecord with chunk headers
        assert 0 < frames <= arrayrecord < 1.1 * frames
    assert summary["cpu"] and len(summary["load_average"]["start"]) == 3


def test_prepare_throughput_json_line():
    """bench/prepare_throughput.py on tiny videos (about 10 s: three CLI runs)."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "prepare_throughput.py"),
        *("--videos", "2", "--seconds", "0.2", "--size", "64x48", "--rounds", "1"),
        *("--workers", "1", "--long_seconds", "0.2", "--long_size", "320x240"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["long_clip"]["peak_rss_mb"] > 0
    assert summary["videos_per_sec"]["1"] > 0 and summary["cpu_seconds_per_video"]["1"] > 0
