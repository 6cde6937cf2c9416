"""Run outputs: ``metrics.jsonl``, TensorBoard events, the resolved config, curves and progress bar.

Only process 0 writes; the other hosts get no-op writers.
"""

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

METRICS_FILE = "metrics.jsonl"


def _scalar(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(value).item()
    return value


class MetricWriter:
    """Appends metric records to ``WORKDIR/metrics.jsonl`` and TensorBoard event files.

    Each record is one JSON object ``{"step", "split", ...scalars}``; TensorBoard gets the
    scalars as ``split/name``. The TensorBoard writer is tensorboardX (no TensorFlow).
    """

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Writes the scalar entries of ``metrics`` (lists and arrays are skipped)."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        for key, value in metrics.items():
            value = _scalar(value)
            if isinstance(value, (int, float)):
                record[key] = value
        with open(self._path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "split", "time"):
                self._tb.add_scalar(f"{split}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``WORKDIR/metrics.jsonl`` (empty if there is none)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config as ``config.json`` (process 0)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def plot_curves(workdir: str) -> str | None:
    """Draws loss and top-1 of ``metrics.jsonl`` by step into ``WORKDIR/curves.png``."""
    records = read_metrics(workdir)
    if jax.process_index() != 0 or not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "top1"), strict=True):
        for split in ("train", "val"):
            points = [(r["step"], r[key]) for r in records if r["split"] == split and key in r]
            if points:
                steps, values = zip(*sorted(dict(points).items()), strict=True)
                ax.plot(steps, values, marker="o" if split == "val" else None, label=split)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(workdir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class Progress:
    """A progress bar with epoch, step, loss, learning rate, clips/s and ETA (process 0)."""

    def __init__(self, total_steps: int, initial_step: int, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=initial_step,
            unit="step",
            dynamic_ncols=True,
            disable=jax.process_index() != 0,
        )

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Moves the bar to ``step`` and shows ``metrics`` (loss, lr, clips_per_sec)."""
        self._bar.update(step - self._bar.n)
        epoch = step / self.steps_per_epoch
        self._bar.set_description(f"epoch {epoch:.2f}", refresh=False)
        if metrics:
            shown = {
                "loss": f"{metrics['loss']:.4f}",
                "lr": f"{metrics['lr']:.2e}",
                "clips/s": f"{metrics['clips_per_sec']:.1f}",
            }
            self._bar.set_postfix(shown, refresh=False)
        self._bar.refresh()

    def write(self, message: str) -> None:
        if jax.process_index() == 0:
            self._bar.write(message)

    def close(self) -> None:
        self._bar.close()
