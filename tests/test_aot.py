"""`python -m tea_jax.train.aot`: target names (default tier) and real compiles for a TPU slice
(libtpu) and GPUs (JAX's CUDA plugin) on the reduced network (slow tier)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tea_jax import accelerators, backend
from tea_jax.errors import UserError
from tea_jax.train import aot

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["--config=configs/synthetic_tea8.py", "--config.data.num_classes=8"]
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason='libtpu is not installed (".[tpu-compile]")'
)
needs_cuda_plugin = pytest.mark.skipif(
    importlib.util.find_spec("jax_plugins") is None
    or importlib.util.find_spec("jax_plugins.xla_cuda12") is None,
    reason='the CUDA plugin is not installed (".[gpu-compile]")',
)


@pytest.mark.parametrize(
    "name, platform, devices, topology",
    [
        ("v5e-16", "tpu", 16, "v5e:4x4"),
        ("v5litepod-16", "tpu", 16, "v5e:4x4"),
        ("v5e-8", "tpu", 8, "v5e:2x4"),
        ("v5e:4x4", "tpu", 16, "v5e:4x4"),
        ("v4-8", "tpu", 4, "v4:2x2x1"),
        ("v4-32", "tpu", 16, "v4:2x2x4"),
        ("v5p-128", "tpu", 64, "v5p:4x4x4"),
        ("v6e-256", "tpu", 256, "v6e:16x16"),
        ("h100x8", "cuda", 8, "1x1x8"),
        ("A100-40GBx8", "cuda", 8, "1x1x8"),
        ("h200x8x2", "cuda", 16, "1x2x8"),
    ],
)
def test_target_names(name, platform, devices, topology):
    target = accelerators.parse_target(name)
    assert (target.platform, target.devices, target.topology) == (platform, devices, topology)


def test_tpu_megacore_and_gpu_description():
    assert accelerators.parse_target("v5p-8").topology_kwargs()["chip_config_name"] == "megacore"
    assert "chip_config_name" not in accelerators.parse_target("v5e-8").topology_kwargs()
    config = accelerators.parse_target("h100x8").topology_kwargs()["target_config"]
    assert "core_count: 132" in config and "device_memory_size: 84942979072" in config


@pytest.mark.parametrize(
    "name, reason",
    [("x100x8", "unknown GPU 'x100'"), ("v9-8", "unknown TPU generation"), ("v5e-6", "power")],
)
def test_unknown_target_names_the_known_ones(name, reason):
    with pytest.raises(UserError, match=reason) as info:
        accelerators.parse_target(name)
    assert "v5e-N" in info.value.hint and "h100xN" in info.value.hint


def test_command_with_an_unknown_target_exits_2():
    run = subprocess.run(
        [sys.executable, "-m", "tea_jax.train.aot", *REDUCED, "--target=tpu-v9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    assert "error: --target tpu-v9" in run.stderr and "Known targets" in run.stderr


def test_collectives_by_kind_and_group():
    hlo = "\n".join(
        [
            "  %all-reduce.1 = (f32[16]{0:T(128)S(1)}, f32[16]{0}) all-reduce(%a, %b), "
            "replica_groups=mesh['axis_0'=4,'axis_1'=1] {'axis_0','axis_1'}, to_apply=%r",
            "  %all-reduce-start.2 = bf16[8,4]{1,0} all-reduce-start(%c), "
            "replica_groups=[4,2]<=[8], to_apply=%r",
            "  %all-reduce-done.2 = bf16[8,4]{1,0} all-reduce-done(%all-reduce-start.2)",
            "  %all-gather.3 = f32[64]{0} all-gather(%d), replica_groups={{0,1,2,3}}",
            "  %add.4 = f32[64]{0} add(%e, %f)",
        ]
    )
    assert aot.collectives(hlo) == {
        "all-reduce (all devices)": {"count": 1, "bytes": 128},
        "all-reduce (groups of 2)": {"count": 1, "bytes": 64},
        "all-gather (groups of 4)": {"count": 1, "bytes": 256},
    }


def _command(tmp_path, *flags):
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "tea_jax.train.aot", *REDUCED, *flags, f"--json={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.read_text()) if out.exists() else None
    return run, report


def _check_training_step(step):
    assert step["fits"] and step["total"] == (
        step["arguments"] + step["outputs"] - step["aliased"] + step["temporaries"] + step["code"]
    )
    assert step["compute_dtype"] == "bfloat16"
    # Groups of 8 clips, 8 clips per device: the gradients', BatchNorm running statistics' and
    # metrics' all-reduce over all devices, and nothing gathered.
    assert set(step["collectives"]) == {"all-reduce (all devices)"}
    assert step["collectives"]["all-reduce (all devices)"]["count"] <= 4
    assert step["batch_per_device"] == 8


@pytest.mark.slow
@needs_libtpu
def test_tpu_slice_compile(tmp_path):
    """Compiles the reduced TEA's training and evaluation steps for v5e-4 with libtpu (about a
    minute on an idle 2-core machine)."""
    run, report = _command(
        tmp_path, "--target=v5e-4", "--config.batch_size=32", "--eval_protocol=efficient"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Fits." in run.stdout and report["note"] == "compiled, not run"
    train, evaluate = report["steps"]
    assert train["device_kind"] == "TPU v5 lite" and train["devices"] == 4
    _check_training_step(train)
    # TPU layouts pad small arrays to tiles: the donated state is at least its logical size.
    assert train["state_bytes"] <= train["aliased"] <= 2 * train["state_bytes"]
    # XLA counts the element-wise work too; the model FLOPs (convolutions and products) are
    # within 10% of its count.
    for step in (train, evaluate):
        assert 0.9 < step["model_flops"] / step["xla_flops"] <= 1.0
        assert step["bytes_accessed"] > 0
    assert evaluate["collectives"] == {} and evaluate["aliased"] == 0


@pytest.mark.slow
@needs_cuda_plugin
def test_gpu_compile_and_batchnorm_groups(tmp_path):
    """Compiles the reduced TEA's training step for 2 x H100 with whole BatchNorm groups per GPU
    (the command) and with groups spanning the GPUs, and a step that cannot fit (about two
    minutes on an idle 2-core machine)."""
    run, report = _command(tmp_path, "--target=h100x2", "--eval_protocol=")
    assert run.returncode == 0, run.stderr[-3000:]
    (train,) = report["steps"]
    assert train["device_kind"] == "NVIDIA H100 80GB HBM3" and train["xla_flops"] is None
    _check_training_step(train)
    assert train["aliased"] == train["state_bytes"]

    from configs import synthetic_tea8

    config = synthetic_tea8.get_config()
    config.data.num_classes = 8
    config.batch_size = 8  # 4 clips per GPU: each group of 8 spans both GPUs
    target = accelerators.parse_target("h100x2")
    setup = aot.setup(config, target, aot.compile_devices(target))
    spanning = aot.compile_step(setup, "train", batch_per_device=4)
    # One all-reduce of the statistics per BatchNorm layer in the forward pass, at least.
    counts = spanning["collectives"]["all-reduce (all devices)"]["count"]
    assert counts >= train["collectives"]["all-reduce (all devices)"]["count"] + 20
    assert not any(k.startswith("all-gather") for k in spanning["collectives"])

    run, report = _command(
        tmp_path, "--target=h100x2", "--eval_protocol=", "--config.batch_size=32768"
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Does not fit." in run.stdout and not report["fits"]
    assert report["steps"][0]["total"] > report["steps"][0]["usable_memory"]


@pytest.mark.slow
@needs_libtpu
def test_installed_compilers_print_nothing_on_a_cpu_machine():
    """With libtpu (and the CUDA plugin) installed, JAX starts on the CPU silently."""
    if backend.has_accelerator():
        pytest.skip("this machine has an accelerator")
    env = {k: v for k, v in __import__("os").environ.items() if k != "JAX_PLATFORMS"}
    run = subprocess.run(
        [sys.executable, "-c", "import tea_jax, jax; print(jax.devices())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.strip() == "[CpuDevice(id=0)]"
