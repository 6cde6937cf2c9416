"""Model FLOP/s, MFU and profiler traces of a training run (the loop's use of them is in
test_train.py)."""

import glob
import os

import jax.numpy as jnp
import pytest

from tea_jax import flops
from tea_jax.train import reporting


@pytest.mark.parametrize(
    ("device_kind", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", jnp.bfloat16, 989e12),
        ("NVIDIA H100 PCIe", jnp.bfloat16, 756e12),
        ("NVIDIA H200", jnp.float32, 495e12),
        ("NVIDIA A100-SXM4-80GB", jnp.bfloat16, 312e12),
        ("TPU v4", jnp.bfloat16, 275e12),
        ("TPU v5 lite", jnp.bfloat16, 197e12),
        ("TPU v5", jnp.bfloat16, 459e12),
        ("TPU v6 lite", jnp.float32, 918e12),
    ],
)
def test_peak_flops_of_known_devices(device_kind, dtype, peak):
    assert flops.peak_flops(device_kind, dtype) == peak
    assert flops.mfu(peak / 4, device_kind, dtype) == pytest.approx(0.25)


@pytest.mark.parametrize("device_kind", ["cpu", "TPU v4 lite", "NVIDIA GeForce RTX 4090", "TPU v3"])
def test_no_peak_and_no_mfu_for_other_devices(device_kind):
    assert flops.peak_flops(device_kind, jnp.bfloat16) is None
    assert flops.mfu(1e12, device_kind, jnp.bfloat16) is None


def test_training_step_counts_three_forward_passes():
    assert flops.step_flops(10, train=False) == 20
    assert flops.step_flops(10, train=True) == 60


def test_efficiency_per_device_and_mfu_on_a_known_device():
    # 2 devices share 989 clips/s of 2 TFLOPs each: 989 TFLOP/s per device, an H200's bf16 peak.
    efficiency = reporting.Efficiency(2 * 10**12, 2, "NVIDIA H200", jnp.bfloat16)
    metrics = efficiency(989.0)
    assert metrics["tflops_per_device"] == pytest.approx(989.0)
    assert metrics["mfu"] == pytest.approx(1.0)
    assert reporting.Efficiency(2 * 10**12, 2, "NVIDIA H200", jnp.float32)(99.0)[
        "mfu"
    ] == pytest.approx(0.2)


def test_efficiency_on_cpu_reports_flops_without_mfu():
    metrics = reporting.Efficiency(10**9, 1, "cpu", jnp.float32)(500.0)
    assert metrics == {"tflops_per_device": pytest.approx(0.5)}


@pytest.mark.parametrize("value", ["3", "0,2", "4,2", "a,b", "1,2,3"])
def test_bad_profile_steps_are_rejected(value):
    with pytest.raises(ValueError, match="profile_steps"):
        reporting.parse_profile_steps(value)


def _trace_files(directory):
    return glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True) + glob.glob(
        os.path.join(directory, "**", "*.trace.json.gz"), recursive=True
    )


def test_profiler_traces_its_window_and_stops_when_the_run_fails_inside_it(tmp_path):
    import jax

    assert reporting.parse_profile_steps("") is None
    profiler = reporting.StepProfiler(str(tmp_path / "a"), "2,3", enabled=True)
    x = jnp.ones(4)
    for step in (1, 2, 3, 4):
        profiler.before_step(step)
        assert profiler.active == (step in (2, 3))
        x = x + 1
        profiler.after_step(step, x)
    assert not profiler.active
    assert len(_trace_files(tmp_path / "a")) == 2

    profiler = reporting.StepProfiler(str(tmp_path / "b"), "1,5", enabled=True)
    with pytest.raises(RuntimeError, match="failed"):
        try:
            for step in (1, 2):
                profiler.before_step(step)
                profiler.after_step(step, x)
            raise RuntimeError("step 3 failed")
        finally:
            profiler.close()
    assert len(_trace_files(tmp_path / "b")) == 2
    jax.profiler.start_trace(str(tmp_path / "c"))  # raises if a trace were still running
    jax.profiler.stop_trace()


def test_profiler_is_off_by_default_and_on_other_processes(tmp_path):
    for profiler in (
        reporting.StepProfiler(str(tmp_path), ""),
        reporting.StepProfiler(str(tmp_path), "1,2", enabled=False),
    ):
        profiler.before_step(1)
        assert not profiler.active
        profiler.close()
    assert not os.path.exists(tmp_path / reporting.PROFILE_DIR)
