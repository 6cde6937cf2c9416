"""The training loop across device counts and processes, and its checkpoints across kills.

Every run is a subprocess (``python tests/test_train.py WORKDIR ...``) so that it can have its own
simulated device count (``--xla_force_host_platform_device_count``), join other processes through
``jax.distributed`` with gloo collectives, or be killed. The runs share a persistent compilation
cache to avoid recompiling the same tiny model.
"""

import json
import os
import signal
import subprocess
import sys
import time

import fake_loader
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 6


def tiny_config(total_steps=TOTAL_STEPS, delay_s=0.0):
    """A ResNet (TSN) with one narrow block per stage on 32x32 fake clips of 4 frames.

    The loop is independent of the network; the TSN ResNet has BatchNorm and dropout like TEA
    and compiles fastest.
    """
    import ml_collections

    from configs import default

    config = default.get_config()
    config.model = "tsn_resnet50"
    config.num_segments = 4
    config.model_options.update(stage_sizes=(1, 1, 1, 1), width_multiplier=0.25, dropout_rate=0.5)
    config.data = ml_collections.ConfigDict(
        {
            "image_size": 32,
            "num_train": 32,
            "num_val": 11,
            "test_clips": 1,
            "test_crops": 1,
            "delay_s": delay_s,
        }
    )
    config.batch_size = 8
    config.eval_batch_size = 8
    config.total_steps = total_steps
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.eval_every_steps = 1000
    config.keep_checkpoints = 10
    config.optim.lr_steps = (1,)  # Epoch 1 = step 4: the rate drops mid-run.
    return config


def _env(devices, cache_dir):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
    return env


def start_run(workdir, *, devices=1, cache_dir, process=None, delay_s=0.0):
    """Starts ``python tests/test_train.py`` training the tiny config in ``workdir``."""
    args = [sys.executable, os.path.abspath(__file__), str(workdir), str(delay_s)]
    if process is not None:
        args += [str(p) for p in process]  # (coordinator port, num_processes, process_id)
    return subprocess.Popen(
        args,
        env=_env(devices, cache_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def read_records(workdir, split):
    """The last record of each step of ``split`` in ``metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r for r in records if r["split"] == split}


def losses(workdir):
    train = read_records(workdir, "train")
    return np.array([train[s]["loss"] for s in sorted(train)])


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted run on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    finish(start_run(workdir, devices=1, cache_dir=cache_dir))
    return workdir


def test_one_and_eight_devices_give_the_same_losses(reference, tmp_path, cache_dir):
    finish(start_run(tmp_path, devices=8, cache_dir=cache_dir))
    expected = losses(reference)
    assert len(expected) == TOTAL_STEPS
    np.testing.assert_allclose(losses(tmp_path), expected, rtol=1e-3, atol=1e-4)
    ref_val, val = (
        read_records(reference, "val")[TOTAL_STEPS],
        read_records(tmp_path, "val")[TOTAL_STEPS],
    )
    assert val["top1"] == ref_val["top1"]
    assert val["loss"] == pytest.approx(ref_val["loss"], rel=1e-3)
    # The learning rate drops at the epoch boundary (step 4 of 4 per epoch).
    lrs = [read_records(tmp_path, "train")[s]["lr"] for s in range(1, TOTAL_STEPS + 1)]
    assert lrs[3] == pytest.approx(0.01 * 8 / 64) and lrs[4] == pytest.approx(0.001 * 8 / 64)


def test_two_processes_in_step_with_one_process(reference, tmp_path, cache_dir):
    """2 processes x 2 devices (gloo collectives) against the single-process run."""
    port = _free_port()
    procs = [
        start_run(tmp_path, devices=2, cache_dir=cache_dir, process=(port, 2, i)) for i in range(2)
    ]
    outputs = [finish(proc) for proc in procs]
    assert "Final validation" in outputs[0]
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-3, atol=1e-4)
    val = read_records(tmp_path, "val")[TOTAL_STEPS]
    ref_val = read_records(reference, "val")[TOTAL_STEPS]
    assert val["top1"] == ref_val["top1"]
    assert val["loss"] == pytest.approx(ref_val["loss"], rel=1e-3)


def test_non_finite_loss_stops_with_a_clear_message():
    import jax.numpy as jnp

    from tea_jax.train import trainer

    history = [{"loss": jnp.float32(v)} for v in (1.0, 0.5, np.nan, 0.2)]
    with pytest.raises(trainer.NonFiniteLossError, match=r"nan at step 13.*checkpoint is step 10"):
        trainer.check_finite(history, 10, 10)
    trainer.check_finite(history[:2], 10, 10)


def test_fake_eval_loader_covers_each_video_once():
    import ml_collections

    cfg = ml_collections.ConfigDict(
        {"image_size": 8, "num_train": 8, "num_val": 7, "test_clips": 1, "test_crops": 1}
    )
    seen = []
    for host in range(3):
        loader = fake_loader.create_loader(
            cfg, "val", batch_size=2, num_segments=2, seed=0, shard_index=host, shard_count=3
        )
        for batch in loader:
            seen += batch["index"][batch["mask"]].tolist()
    assert sorted(seen) == list(range(7))


def _wait_for_checkpoint(workdir, step, proc, timeout=180):
    path = os.path.join(workdir, "checkpoints", str(step), "commit_success.txt")
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.time() < deadline, f"no checkpoint {step} after {timeout}s"
        time.sleep(0.05)


def test_sigkill_then_resume_matches_uninterrupted_run(reference, tmp_path, cache_dir):
    proc = start_run(tmp_path, cache_dir=cache_dir, delay_s=0.15)
    _wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(read_records(tmp_path, "train")) < TOTAL_STEPS
    out = finish(start_run(tmp_path, cache_dir=cache_dir))
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-5, atol=1e-6)
    assert "Final validation" in out


def test_sigterm_saves_exits_cleanly_and_resumes_on_more_devices(reference, tmp_path, cache_dir):
    proc = start_run(tmp_path, cache_dir=cache_dir, delay_s=0.3)
    _wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert "SIGTERM" in out
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    last = max(read_records(tmp_path, "train"))
    assert last < TOTAL_STEPS and steps[-1] == last
    # The replicated state restores onto 8 devices and continues as the 1-device run did.
    finish(start_run(tmp_path, devices=8, cache_dir=cache_dir))
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-3, atol=1e-4)


def _main(argv):
    """Subprocess entry: ``WORKDIR DELAY [PORT NUM_PROCESSES PROCESS_ID]``."""
    import jax

    if len(argv) > 2:
        port, num_processes, process_id = (int(a) for a in argv[2:])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id
        )
    from tea_jax.train import trainer

    results = trainer.train_and_evaluate(
        tiny_config(delay_s=float(argv[1])), argv[0], create_loader=fake_loader.create_loader
    )
    if results:
        print(f"Final validation top-1 {results['top1']}")
    else:
        print("Stopped early.")


if __name__ == "__main__":
    _main(sys.argv[1:])
