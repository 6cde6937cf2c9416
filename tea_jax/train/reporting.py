"""Run outputs: ``metrics.jsonl``, TensorBoard events, the resolved config, curves, progress bar,
model FLOP/s and MFU, and profiler traces.

Only process 0 writes; the other hosts get no-op writers.
"""

import io
import json
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from tea_jax import flops, storage

METRICS_FILE = "metrics.jsonl"
PROFILE_DIR = "profile"


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
        self._path = storage.join(workdir, METRICS_FILE)
        self._tb = None
        if self.enabled:
            self._tb = storage.summary_writer(storage.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Writes the scalar entries of ``metrics`` (lists and arrays are skipped)."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        for key, value in metrics.items():
            value = _scalar(value)
            if isinstance(value, (int, float)):
                record[key] = value
        storage.append_text(self._path, json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "split", "time"):
                self._tb.add_scalar(f"{split}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``WORKDIR/metrics.jsonl`` (empty if there is none)."""
    path = storage.join(workdir, METRICS_FILE)
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config as ``config.json`` (process 0)."""
    if jax.process_index() != 0:
        return
    storage.makedirs(workdir)
    storage.write_text(
        storage.join(workdir, "config.json"),
        config.to_json_best_effort(indent=2, sort_keys=True) + "\n",
    )


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
    path = storage.join(workdir, "curves.png")
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, image.getvalue())
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
            if "tflops_per_device" in metrics:
                shown["TFLOP/s/dev"] = f"{metrics['tflops_per_device']:.3g}"
            if "mfu" in metrics:
                shown["MFU"] = f"{100 * metrics['mfu']:.1f}%"
            self._bar.set_postfix(shown, refresh=False)
        self._bar.refresh()

    def write(self, message: str) -> None:
        if jax.process_index() == 0:
            self._bar.write(message)

    def close(self) -> None:
        self._bar.close()


class Efficiency:
    """Model FLOP/s per device and model FLOPs utilisation (MFU) from the training clips/s.

    Args:
      train_flops_per_clip: model FLOPs of one clip's training step
        (``tea_jax.flops.step_flops(macs, train=True)``).
      num_devices: devices sharing the global batch.
      device_kind: ``jax.Device.device_kind`` of those devices.
      dtype: the compute dtype.
    """

    def __init__(self, train_flops_per_clip: int, num_devices: int, device_kind: str, dtype: Any):
        self.train_flops_per_clip = train_flops_per_clip
        self.num_devices = num_devices
        self.device_kind = device_kind
        self.dtype = dtype

    @classmethod
    def of_model(cls, model: Any, num_segments: int, image_size: int) -> "Efficiency":
        """For a Flax video model trained on ``num_segments`` frames of ``image_size`` squares,
        on all of JAX's devices; the MACs are counted once, from the jaxpr (no compilation)."""
        macs = flops.clip_macs(model, num_segments, image_size)
        return cls(
            flops.step_flops(macs, train=True),
            jax.device_count(),
            jax.devices()[0].device_kind,
            model.dtype,
        )

    def __call__(self, clips_per_sec: float) -> dict[str, float]:
        """``tflops_per_device``, and ``mfu`` where the device's peak FLOP/s is known."""
        per_device = clips_per_sec * self.train_flops_per_clip / self.num_devices
        metrics = {"tflops_per_device": per_device / 1e12}
        utilisation = flops.mfu(per_device, self.device_kind, self.dtype)
        if utilisation is not None:
            metrics["mfu"] = utilisation
        return metrics


def parse_profile_steps(value: str) -> tuple[int, int] | None:
    """``'START,END'`` -> ``(START, END)`` (1 <= START <= END); ``''`` -> None.

    Raises:
      ValueError: for anything else.
    """
    if not value:
        return None
    try:
        start, end = (int(part) for part in value.split(","))
    except ValueError:
        start = end = 0
    if not 1 <= start <= end:
        raise ValueError(
            f"profile_steps={value!r}: expected 'START,END', two step numbers with "
            "1 <= START <= END, or '' for no profile."
        )
    return start, end


class StepProfiler:
    """Traces training steps ``START..END`` (1-based, inclusive) with ``jax.profiler`` into
    ``WORKDIR/profile``, on process 0.

    The trace is TensorBoard's (``plugins/profile/<run>/*.xplane.pb``) plus a Perfetto trace
    (``*.trace.json.gz``). A run resumed inside the window traces the rest of it; :meth:`close`
    stops a trace still running when training ends or fails inside the window. A workdir in a
    bucket gets the trace when it stops (it is written to a local temporary folder first).
    """

    def __init__(self, workdir: str, steps: str, *, enabled: bool | None = None):
        self.window = parse_profile_steps(steps)
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.directory = storage.join(workdir, PROFILE_DIR)
        self._staging = ""
        self.active = False
        self._done = False

    def before_step(self, step: int) -> None:
        """Starts the trace if step ``step`` (about to run) is in the window."""
        if not self.enabled or self.window is None or self.active or self._done:
            return
        start, end = self.window
        if start <= step <= end:
            self._staging = storage.staging_dir(self.directory)
            jax.profiler.start_trace(self._staging, create_perfetto_trace=True)
            self.active = True

    def after_step(self, step: int, outputs: Any) -> None:
        """Stops the trace after the last step of the window, once ``outputs`` are computed."""
        if self.active and step >= self.window[1]:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        if self.active:
            self.active = False
            self._done = True
            jax.profiler.stop_trace()
            storage.publish(self._staging, self.directory)
