"""The command lines with ``gs://`` workdirs and models, against a Cloud Storage API on localhost
(fake-gcs-server): training killed and resumed, two processes sharing a workdir, evaluation,
prediction, export and ``tea_jax.load_model`` reading the bucket.

Each run is ``train.py --config configs/synthetic_tea8.py`` on a tiny synthetic dataset, started in
an empty working directory that must stay empty (the dataset is generated outside it).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import local_servers
import numpy as np
import pytest
from fast_compile import cpu_env

from tea_jax import storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 6


def _overrides(data_root, cache_dir):
    return [
        f"--config.data.root={data_root}",
        "--config.data.synthetic.num_train=16",
        "--config.data.synthetic.num_val=8",
        "--config.data.num_workers=0",
        f"--config.total_steps={TOTAL_STEPS}",
        "--config.batch_size=8",
        "--config.bn_group_clips=4",  # 4 clips per host on two processes.
        "--config.eval_batch_size=8",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=2",
        "--config.eval_every_steps=1000",
        "--config.keep_checkpoints=10",
        f"--config.compilation_cache_dir={cache_dir}",
    ]


class Runs:
    """Starts the command lines in an empty working directory with the server's variables."""

    def __init__(self, server, tmp):
        self.server = server
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()
        self.data = tmp / "data"
        self.cache = tmp / "jax_cache"
        self.bucket = server.bucket()

    def env(self, devices=None):
        env = cpu_env(devices, PYTHONPATH=ROOT, **self.server.env)
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # The config's folder is the one under test.
        return env

    def start(self, args, devices=None):
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=self.cwd,
            env=self.env(devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def train(self, workdir, *extra, devices=None):
        args = [os.path.join(ROOT, "train.py"), "--config"]
        args += [os.path.join(ROOT, "configs", "synthetic_tea8.py"), f"--workdir={workdir}"]
        return self.start([*args, *_overrides(self.data, self.cache), *extra], devices)

    def run(self, args):
        return finish(self.start(args))


def finish(proc, timeout=420):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def losses(workdir):
    """The training loss of each step (the last record of a step written twice)."""
    records = [
        json.loads(line) for line in storage.read_text(f"{workdir}/metrics.jsonl").splitlines()
    ]
    train = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    return np.array([train[s] for s in sorted(train)])


def wait_for_checkpoint(server, workdir, step, procs, timeout=300):
    marker = f"{workdir.split('/', 3)[3]}/checkpoints/{step}/commit_success.txt"
    deadline = time.time() + timeout
    while marker not in server.files(workdir):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.time() < deadline, f"no checkpoint {step} after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def runs(gcs_server, tmp_path_factory):
    return Runs(gcs_server, tmp_path_factory.mktemp("storage_cli"))


@pytest.fixture(scope="module")
def reference(runs):
    """An uninterrupted run in the bucket; its output."""
    workdir = f"{runs.bucket}/reference"
    return workdir, finish(runs.train(workdir))


@pytest.mark.slow
def test_training_in_a_bucket_killed_and_resumed_matches_an_uninterrupted_run(runs, reference, gcs):
    """Three runs of the synthetic config (one compiles, two load from the cache): ~2 min."""
    ref_workdir, ref_out = reference
    assert "Training step: compiled in" in ref_out, ref_out[-3000:]
    assert f"Outputs in {ref_workdir}." in ref_out
    workdir = f"{runs.bucket}/killed"
    proc = runs.train(workdir)
    wait_for_checkpoint(gcs, workdir, 2, [proc])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(losses(workdir)) < TOTAL_STEPS
    out = finish(runs.train(workdir))
    assert f"Resuming from step 2 ({workdir}/checkpoints/2)" in out, out[-3000:]
    assert "Training step: loaded from the compilation cache" in out, out[-3000:]
    np.testing.assert_allclose(losses(workdir), losses(ref_workdir), rtol=1e-5, atol=1e-6)
    files = gcs.files(workdir)
    for name in ("config.json", "curves.png", "model/model.json", "model/classes.txt"):
        assert f"killed/{name}" in files, files
    assert any(f.startswith("killed/tensorboard/events.out.tfevents") for f in files), files
    assert os.listdir(runs.cwd) == []


@pytest.mark.slow
def test_two_processes_share_a_bucket_workdir_and_both_resume(runs, reference, gcs):
    """Two processes (gloo collectives, one device each), killed after a checkpoint and started
    again: one set of checkpoints holding both hosts' data positions; then one process evaluates
    the workdir. ~3 min."""
    workdir = f"{runs.bucket}/two_processes"

    def start_both():
        port = local_servers.free_port()
        return [
            runs.train(
                workdir,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
                "--cpu_collectives=gloo",
                devices=1,
            )
            for i in range(2)
        ]

    procs = start_both()
    wait_for_checkpoint(gcs, workdir, 2, procs)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait()
    outputs = [finish(proc) for proc in start_both()]
    assert f"Resuming from step 2 ({workdir}/checkpoints/2)" in outputs[0], outputs[0][-3000:]
    assert "Final validation" in outputs[0]
    files = gcs.files(workdir)
    for step in range(2, TOTAL_STEPS + 1, 2):
        for host in range(2):
            name = f"two_processes/checkpoints/{step}/data/process_{host}-of-2.json"
            assert name in files, files
    assert not any("checkpoints-skipped" in f for f in files)
    assert len(losses(workdir)) == TOTAL_STEPS
    assert os.listdir(runs.cwd) == []

    # One process evaluates what two wrote: the same metrics as the model exported from them.
    eval_py = [os.path.join(ROOT, "eval.py"), "--config"]
    eval_py += [os.path.join(ROOT, "configs", "synthetic_tea8.py"), "--protocols=efficient"]
    eval_py += _overrides(runs.data, runs.cache)
    out = runs.run([*eval_py, f"--workdir={workdir}"])
    assert "Traceback" not in out and "Sharding info" not in out, out[-3000:]
    from_workdir = json.loads(storage.read_text(f"{workdir}/eval_efficient.json"))
    runs.run([*eval_py, f"--workdir={workdir}/model_eval", f"--checkpoint={workdir}/model"])
    from_model = json.loads(storage.read_text(f"{workdir}/model_eval/eval_efficient.json"))
    for key in ("top1", "top5", "mean_class_accuracy", "loss", "per_class_accuracy"):
        assert from_workdir[key] == from_model[key], key


@pytest.mark.slow
def test_eval_predict_export_and_load_model_read_the_bucket(runs, reference, gcs):
    """eval.py (training checkpoints and --checkpoint), predict, export and load_model on the
    reference run's gs:// workdir; ~1 min."""
    workdir, _ = reference
    model = f"{workdir}/model"
    config = ["--config", os.path.join(ROOT, "configs", "synthetic_tea8.py")]
    eval_py = [os.path.join(ROOT, "eval.py"), *config, "--protocols=efficient"]
    eval_py += _overrides(runs.data, runs.cache)
    out = runs.run([*eval_py, f"--workdir={workdir}"])
    assert f"Checkpoint: {workdir}/checkpoints/{TOTAL_STEPS} (val split)" in out, out[-3000:]
    assert "Evaluation step: loaded from the compilation cache" in out, out[-3000:]
    report = json.loads(storage.read_text(f"{workdir}/eval_efficient.json"))
    assert report["num_videos"] == 8

    out = runs.run([*eval_py, f"--checkpoint={model}", f"--workdir={runs.bucket}/eval"])
    assert f"Checkpoint: {model}" in out
    files = gcs.files(f"{runs.bucket}/eval")
    for name in ("eval_efficient.json", "confusion_efficient.png", "predictions_efficient.jsonl"):
        assert f"eval/{name}" in files, files

    video = str(runs.data / "val" / sorted(os.listdir(runs.data / "val"))[0])
    out = runs.run(["-m", "tea_jax.predict", "--checkpoint", model, video])
    names = storage.read_text(f"{model}/classes.txt").splitlines()
    lines = _without_credentials_lookup(out)
    assert lines[0] == video and len(lines) == 6, out
    assert all(line.split(". ", 1)[1].rsplit(" ", 1)[0].strip() in names for line in lines[1:])

    exported = f"{runs.bucket}/export/tea8.jax"
    out = runs.run(["-m", "tea_jax.export", "--checkpoint", model, "--output", exported])
    assert f"Exported {model} to {exported}" in out
    assert json.loads(storage.read_text(exported + ".json"))["classes"] == names

    import tea_jax

    net, variables = tea_jax.load_model(model)
    assert net.num_classes == 8 and "params" in variables
    assert os.listdir(runs.cwd) == []


@pytest.mark.slow
def test_unreachable_storage_is_one_line_naming_the_url(runs):
    """train.py with no storage server at the address: gcsfs retries for about 30 s, then the
    run stops with one line."""
    env = runs.env()
    dead = f"http://127.0.0.1:{local_servers.free_port()}"
    env.update(STORAGE_EMULATOR_HOST=dead, TENSORSTORE_GCS_HTTP_URL=dead)
    workdir = "gs://bucket/run"
    args = [os.path.join(ROOT, "train.py"), "--config"]
    args += [os.path.join(ROOT, "configs", "synthetic_tea8.py"), f"--workdir={workdir}"]
    proc = subprocess.run(
        [sys.executable, *args], cwd=runs.cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines[-30:]
    assert lines[0].startswith(f"error: --workdir {workdir} is not writable: "), lines
    assert os.listdir(runs.cwd) == []


def _without_credentials_lookup(out):
    """The output's lines less tensorstore's line saying which credentials it uses (printed by
    its C++ logging, once per process)."""
    lookup = re.compile(r"[IWE]\d{4} [\d:.]+ +\d+ google_auth_provider\.cc:\d+\] ")
    return [line for line in out.strip().splitlines() if not lookup.match(line)]
