"""A run's checkpoints across topologies: written on some devices and hosts, evaluated and resumed
on others, by the command lines as a user types them.

Each run is ``train.py``/``eval.py`` with ``configs/synthetic_tsn8.py`` (the reduced network that
compiles fastest) on a tiny synthetic dataset, in a subprocess with its own simulated device count
(``--xla_force_host_platform_device_count``) or as two processes joined with gloo collectives.
"""

import json
import os
import subprocess
import sys

import local_servers
import numpy as np
import pytest
from fast_compile import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ["--config", os.path.join(ROOT, "configs", "synthetic_tsn8.py")]
STEPS = 4


def _overrides(data_root, total_steps=STEPS):
    return [
        f"--config.data.root={data_root}",
        "--config.data.synthetic.num_train=16",
        "--config.data.synthetic.num_val=8",
        "--config.data.num_workers=0",
        f"--config.total_steps={total_steps}",
        "--config.batch_size=8",
        "--config.bn_group_clips=2",
        "--config.eval_batch_size=8",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=2",
    ]


class Runs:
    """Starts train.py and eval.py on the tiny dataset with a shared compilation cache."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.data = tmp / "data"
        self.cache = str(tmp / "jax_cache")

    def start(self, script, workdir, *extra, devices=1, process=None, total_steps=STEPS):
        args = [sys.executable, os.path.join(ROOT, script), *CONFIG, f"--workdir={workdir}"]
        args += [*_overrides(self.data, total_steps), *extra]
        if process is not None:
            port, index = process
            args += [
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={index}",
                "--cpu_collectives=gloo",
            ]
        env = cpu_env(devices, PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=self.cache)
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, script, workdir, *extra, devices=1, processes=1, total_steps=STEPS):
        """Runs ``script`` in ``processes`` processes; returns the first one's stdout."""
        if processes == 1:
            procs = [self.start(script, workdir, *extra, devices=devices, total_steps=total_steps)]
        else:
            port = local_servers.free_port()
            procs = [
                self.start(
                    script,
                    workdir,
                    *extra,
                    devices=devices,
                    process=(port, i),
                    total_steps=total_steps,
                )
                for i in range(processes)
            ]
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=480)
            assert proc.returncode == 0, out[-3000:] + err[-3000:]
            _assert_quiet(err)
            outputs.append(out)
        return outputs[0]

    def evaluate(self, workdir, **topology):
        """eval.py's efficient protocol of ``workdir``'s best checkpoint: the report and the
        predictions it wrote (moved aside, so that the next evaluation writes its own)."""
        self.run("eval.py", workdir, "--protocols=efficient", **topology)
        with open(os.path.join(workdir, "eval_efficient.json")) as f:
            report = json.load(f)
        with open(os.path.join(workdir, "predictions_efficient.jsonl")) as f:
            report["predictions"] = [json.loads(line) for line in f]
        for name in ("eval_efficient.json", "predictions_efficient.jsonl"):
            os.remove(os.path.join(workdir, name))
        return report


def _assert_quiet(stderr):
    """No traceback and no warning (Orbax's 'Sharding info not provided ...' above all)."""
    for word in ("Traceback", "Warning", "WARNING", "Sharding info"):
        assert word not in stderr, stderr[-3000:]


def _assert_same_evaluation(report, expected):
    """The same metrics and per-video predictions (top-5 classes and their scores)."""
    for key in ("checkpoint", "num_videos", "top1", "top5", "mean_class_accuracy"):
        assert report[key] == expected[key], (key, report[key], expected[key])
    np.testing.assert_allclose(report["loss"], expected["loss"], rtol=1e-5)
    for got, want in zip(report["predictions"], expected["predictions"], strict=True):
        assert (got["video"], got["label"], got["top5"]) == (
            want["video"],
            want["label"],
            want["top5"],
        )
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("topologies"))


@pytest.mark.slow
def test_four_devices_evaluated_on_two_and_one(runs):
    """A workdir written on 4 devices, evaluated on 4, 2 and 1: the same metrics. About 2 min on
    2 cores (one training run and three evaluations, each compiling for its device count)."""
    workdir = runs.tmp / "four_devices"
    runs.run("train.py", workdir, devices=4)
    expected = runs.evaluate(workdir, devices=4)
    for devices in (2, 1):
        _assert_same_evaluation(runs.evaluate(workdir, devices=devices), expected)


@pytest.mark.slow
def test_two_processes_evaluated_by_one(runs):
    """A workdir written by 2 processes (gloo), evaluated by 2 processes and by 1: the same
    metrics. About 2 min on 2 cores (two pairs of processes, then one)."""
    workdir = runs.tmp / "two_processes"
    runs.run("train.py", workdir, processes=2)
    expected = runs.evaluate(workdir, processes=2)
    _assert_same_evaluation(runs.evaluate(workdir), expected)


@pytest.mark.slow
def test_one_device_evaluated_and_resumed_on_four(runs):
    """A workdir written on 1 device is evaluated on 4 (the same metrics) and its training resumes
    there. About 2 min on 2 cores."""
    workdir = runs.tmp / "one_device"
    runs.run("train.py", workdir)
    expected = runs.evaluate(workdir)
    _assert_same_evaluation(runs.evaluate(workdir, devices=4), expected)
    out = runs.run("train.py", workdir, devices=4, total_steps=STEPS + 2)
    assert f"Resuming from step {STEPS} ({workdir}/checkpoints/{STEPS})" in out, out[-3000:]
    assert "Final validation top-1" in out
    assert sorted(os.listdir(workdir / "checkpoints"), key=int)[-1] == str(STEPS + 2)
