"""Trains the reduced TEA for thousands of steps and records the host memory over time.

    python bench/soak.py [--workdir runs/soak] [--steps 3000] [--workers 2] [--interval 10]

Runs ``train.py --config configs/synthetic_tea8.py`` with loader workers and periodic
evaluation, and samples every ``--interval`` seconds the resident memory (RSS) of the training
process and the summed RSS of its child processes (loader workers, resource tracker), with the
training step reached, into ``WORKDIR/memory.jsonl``. Running the command again resumes the
training from its checkpoint and appends to the samples; with the run finished it only reports.
The report compares the RSS at the end against the RSS right after warm-up (the first
evaluation, which allocates the evaluation loader and compiles the evaluation step).
"""

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MEMORY_FILE = "memory.jsonl"


def last_step(workdir: Path) -> int:
    """The last training step logged in ``metrics.jsonl`` (0 before the first)."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def sample(proc: psutil.Process) -> dict[str, float]:
    """RSS in MiB of ``proc`` and of all its descendants."""
    mib = 1 << 20
    children = 0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            children += child.memory_info().rss
    return {"main_mib": proc.memory_info().rss / mib, "children_mib": children / mib}


def train(args: argparse.Namespace) -> None:
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs" / "synthetic_tea8.py"),
        f"--workdir={args.workdir}",
        f"--config.data.root={args.workdir / 'data'}",
        f"--config.data.num_workers={args.workers}",
        f"--config.total_steps={args.steps}",
        f"--config.eval_every_steps={args.eval_every}",
        f"--config.checkpoint_every_steps={args.eval_every}",
        "--config.log_every_steps=50",
    ]
    proc = subprocess.Popen(command, cwd=ROOT)
    watched = psutil.Process(proc.pid)
    start = time.time()
    with open(args.workdir / MEMORY_FILE, "a") as f:
        while proc.poll() is None:
            try:
                record = {"time_s": time.time() - start, "step": last_step(args.workdir)}
                record |= sample(watched)
            except psutil.NoSuchProcess:
                break
            f.write(json.dumps(record) + "\n")
            f.flush()
            time.sleep(args.interval)
    if proc.wait() != 0:
        raise SystemExit(f"train.py exited with {proc.returncode}")


def report(args: argparse.Namespace) -> None:
    path = args.workdir / MEMORY_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    warm = [r for r in records if r["step"] > args.eval_every]
    if len(warm) < 4:
        raise SystemExit(f"{path}: too few samples after step {args.eval_every} for a report")
    quarter = max(len(warm) // 4, 1)
    print(f"{len(records)} samples, up to step {records[-1]['step']}")
    for key in ("main_mib", "children_mib"):
        first = statistics.median(r[key] for r in warm[:quarter])
        last = statistics.median(r[key] for r in warm[-quarter:])
        print(
            f"{key}: {first:.0f} MiB after warm-up (steps {warm[0]['step']}-"
            f"{warm[quarter - 1]['step']}), {last:.0f} MiB at the end (steps "
            f"{warm[-quarter]['step']}-{warm[-1]['step']}): {100 * (last / first - 1):+.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "soak")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval_every", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=10.0)
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if last_step(args.workdir) < args.steps:
        train(args)
    report(args)


if __name__ == "__main__":
    main()
