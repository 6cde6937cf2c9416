"""The training loop across device counts and processes, and its checkpoints across kills.

Every run is a subprocess (``python tests/test_train.py WORKDIR ...``) so that it can have its own
simulated device count (``--xla_force_host_platform_device_count``), join other processes through
``jax.distributed`` with gloo collectives, or be killed. The runs share a persistent compilation
cache to avoid recompiling the same tiny model.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import fake_loader
import local_servers
import numpy as np
import pytest
from fast_compile import cpu_env

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
    config.bn_group_clips = 2  # Groups that span devices on 8 devices, within a host on two hosts.
    config.eval_batch_size = 8
    config.total_steps = total_steps
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.eval_every_steps = 1000
    config.keep_checkpoints = 10
    config.optim.lr_steps = (1,)  # Epoch 1 = step 4: the rate drops mid-run.
    return config


def _env(devices, cache_dir):
    return cpu_env(
        devices,
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
    )


def start_run(
    workdir,
    *,
    devices=1,
    cache_dir,
    process=None,
    delay_s=0.0,
    fail_save_step=None,
    num_train=None,
    profile_steps=None,
):
    """Starts ``python tests/test_train.py`` training the tiny config in ``workdir``.

    ``fail_save_step``: saving that step fails with "No space left on device".
    ``num_train``: another size of the training split.
    ``profile_steps``: the config's ``profile_steps``.
    """
    args = [sys.executable, os.path.abspath(__file__), str(workdir), str(delay_s)]
    if process is not None:
        args += [str(p) for p in process]  # (coordinator port, num_processes, process_id)
    env = _env(devices, cache_dir)
    if fail_save_step is not None:
        env["FAIL_SAVE_STEP"] = str(fail_save_step)
    if num_train is not None:
        env["NUM_TRAIN"] = str(num_train)
    if profile_steps is not None:
        env["PROFILE_STEPS"] = profile_steps
    return subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc, timeout=480):
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


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """An uninterrupted run on one device."""
    workdir = tmp_path_factory.mktemp("reference")
    finish(start_run(workdir, devices=1, cache_dir=cache_dir))
    return workdir


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, cache_dir):
    """An uninterrupted run on eight simulated devices."""
    workdir = tmp_path_factory.mktemp("eight_devices")
    finish(start_run(workdir, devices=8, cache_dir=cache_dir))
    return workdir


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_losses(reference, eight_devices):
    """About a minute on 2 cores: two training subprocesses (the fixtures), each compiling."""
    expected = losses(reference)
    assert len(expected) == TOTAL_STEPS
    np.testing.assert_allclose(losses(eight_devices), expected, rtol=1e-3, atol=1e-4)
    ref_val, val = (
        read_records(reference, "val")[TOTAL_STEPS],
        read_records(eight_devices, "val")[TOTAL_STEPS],
    )
    assert val["top1"] == ref_val["top1"]
    assert val["loss"] == pytest.approx(ref_val["loss"], rel=1e-3)
    # The learning rate drops at the epoch boundary (step 4 of 4 per epoch).
    lrs = [read_records(eight_devices, "train")[s]["lr"] for s in range(1, TOTAL_STEPS + 1)]
    assert lrs[3] == pytest.approx(0.01 * 8 / 64) and lrs[4] == pytest.approx(0.001 * 8 / 64)


@pytest.mark.slow
def test_metrics_report_model_flops_and_a_profile_ending_after_the_run_is_written(
    tmp_path, cache_dir
):
    """``profile_steps`` 5-100 of a 6-step run: the trace stops when training ends. About a minute
    on 2 cores: a training subprocess, compiled, with the profiler on."""
    import glob

    from tea_jax import flops
    from tea_jax.train import model_setup

    finish(start_run(tmp_path, cache_dir=cache_dir, profile_steps="5,100"))
    model = model_setup.build_model(tiny_config(), fake_loader.NUM_CLASSES)
    clip_flops = flops.step_flops(flops.clip_macs(model, 4, 32), train=True)
    train = read_records(tmp_path, "train")
    assert len(train) == TOTAL_STEPS
    for record in train.values():
        assert "mfu" not in record  # CPU: no known peak
        expected = record["clips_per_sec"] * clip_flops / 1e12
        assert record["tflops_per_device"] == pytest.approx(expected, rel=1e-6)
    profile = tmp_path / "profile"
    assert glob.glob(str(profile / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert glob.glob(str(profile / "**" / "*.trace.json.gz"), recursive=True)


def _two_processes(workdir, cache_dir):
    port = local_servers.free_port()
    procs = [
        start_run(workdir, devices=2, cache_dir=cache_dir, process=(port, 2, i)) for i in range(2)
    ]
    return [finish(proc) for proc in procs]


@pytest.mark.slow
def test_two_processes_in_step_with_one_process(reference, tmp_path, cache_dir):
    """2 processes x 2 devices (gloo collectives) against the single-process run; then both
    resume from one step when the last checkpoint lacks one host's data state. 1.5-2.5 minutes on
    2 cores: four training processes, two at a time, each compiling for its devices."""
    outputs = _two_processes(tmp_path, cache_dir)
    assert "Final validation" in outputs[0]
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-3, atol=1e-4)
    val = read_records(tmp_path, "val")[TOTAL_STEPS]
    ref_val = read_records(reference, "val")[TOTAL_STEPS]
    assert val["top1"] == ref_val["top1"]
    assert val["loss"] == pytest.approx(ref_val["loss"], rel=1e-3)

    os.remove(tmp_path / "checkpoints" / "6" / "data" / "process_1-of-2.json")
    outputs = _two_processes(tmp_path, cache_dir)
    skipped = f"Skipping checkpoint {tmp_path / 'checkpoints' / '6'}, it does not restore: "
    assert skipped + "another host could not restore it" in outputs[0], outputs[0][-3000:]
    assert skipped + "FileNotFoundError" in outputs[1], outputs[1][-3000:]
    resumed = f"Resuming from step 4 ({tmp_path / 'checkpoints' / '4'}); the data order continues."
    assert resumed in outputs[0], outputs[0][-3000:]
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-3, atol=1e-4)


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


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(reference, tmp_path, cache_dir):
    """About a minute on 2 cores: the reference run, the killed run and its resumption."""
    proc = start_run(tmp_path, cache_dir=cache_dir, delay_s=0.15)
    _wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(read_records(tmp_path, "train")) < TOTAL_STEPS
    out = finish(start_run(tmp_path, cache_dir=cache_dir))
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-5, atol=1e-6)
    assert "Final validation" in out


@pytest.mark.slow
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


def _truncate_largest_file(folder):
    files = [os.path.join(r, f) for r, _, names in os.walk(folder) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)


@pytest.mark.slow
def test_corrupt_checkpoints_are_skipped_and_eight_devices_resume_on_one(
    reference, eight_devices, tmp_path, cache_dir
):
    """Checkpoint 6 has a truncated file, 4 a deleted one: the run resumes from 2, on 1 device."""
    shutil.copytree(eight_devices, tmp_path, dirs_exist_ok=True)
    _truncate_largest_file(tmp_path / "checkpoints" / "6" / "state")
    os.remove(tmp_path / "checkpoints" / "4" / "state" / "_METADATA")
    with open(tmp_path / "metrics.jsonl") as f:
        kept = [line for line in f if json.loads(line)["step"] <= 2]
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(kept)
    out = finish(start_run(tmp_path, devices=1, cache_dir=cache_dir))
    for step in (6, 4):
        assert f"Skipping checkpoint {tmp_path / 'checkpoints' / str(step)}," in out, out
    resumed = f"Resuming from step 2 ({tmp_path / 'checkpoints' / '2'}); the data order continues."
    assert resumed in out, out[-3000:]
    assert sorted(os.listdir(tmp_path / "checkpoints-skipped")) == ["4", "6"]
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_no_intact_checkpoint_stops_instead_of_starting_over(reference, tmp_path, cache_dir):
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    for step in (2, 4, 6):
        _truncate_largest_file(tmp_path / "checkpoints" / str(step) / "state")
    proc = start_run(tmp_path, cache_dir=cache_dir)
    out, _ = proc.communicate(timeout=480)
    assert proc.returncode != 0
    assert f"No checkpoint in {tmp_path / 'checkpoints'} restores" in out, out[-3000:]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]


@pytest.mark.slow
def test_failed_save_names_path_and_step_and_keeps_earlier_checkpoints(
    reference, tmp_path, cache_dir
):
    """ "No space left on device" while saving step 4; the same command then resumes from 2."""
    proc = start_run(tmp_path, cache_dir=cache_dir, fail_save_step=4)
    out, _ = proc.communicate(timeout=480)
    assert proc.returncode != 0
    path = tmp_path / "checkpoints" / "4"
    assert f"Saving the checkpoint of step 4 to {path} failed" in out, out[-3000:]
    assert "No space left on device" in out
    out = finish(start_run(tmp_path, cache_dir=cache_dir))
    assert "Resuming from step 2 (" in out, out[-3000:]
    assert "the data order continues" in out
    np.testing.assert_allclose(losses(tmp_path), losses(reference), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_with_a_longer_training_list_restarts_the_data_order(reference, tmp_path, cache_dir):
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    out = finish(start_run(tmp_path, cache_dir=cache_dir, num_train=40))
    checkpoint = tmp_path / "checkpoints" / str(TOTAL_STEPS)
    assert f"Resuming from step {TOTAL_STEPS} ({checkpoint}); the data order restarts." in out
    assert "the training split had 32 videos when step 6 was saved and has 40 now" in out, out


def _fail_saves_at(step):
    """Makes the data iterator's checkpoint writer fail at ``step`` as on a full disk."""
    import errno

    from grain._src.python.checkpoint import handler

    save = handler.CheckpointHandler.save

    def failing_save(self, directory, *args, **kwargs):
        if re.fullmatch(rf"{step}(\..*)?", os.path.basename(os.path.dirname(str(directory)))):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return save(self, directory, *args, **kwargs)

    handler.CheckpointHandler.save = failing_save


def _main(argv):
    """Subprocess entry: ``WORKDIR DELAY [PORT NUM_PROCESSES PROCESS_ID]``."""
    import jax

    if len(argv) > 2:
        port, num_processes, process_id = (int(a) for a in argv[2:])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"127.0.0.1:{port}",
            num_processes=num_processes,
            process_id=process_id,
            heartbeat_timeout_seconds=20,
        )
    from tea_jax.train import trainer

    if os.environ.get("FAIL_SAVE_STEP"):
        _fail_saves_at(int(os.environ["FAIL_SAVE_STEP"]))
    config = tiny_config(delay_s=float(argv[1]))
    config.data.num_train = int(os.environ.get("NUM_TRAIN", config.data.num_train))
    config.profile_steps = os.environ.get("PROFILE_STEPS", "")
    results = trainer.train_and_evaluate(config, argv[0], create_loader=fake_loader.create_loader)
    if results:
        print(f"Final validation top-1 {results['top1']}")
    else:
        print("Stopped early.")


if __name__ == "__main__":
    _main(sys.argv[1:])
