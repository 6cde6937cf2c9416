"""The command-line tools end to end on a small synthetic dataset: train.py, eval.py, predict."""

import json
import os
import subprocess
import sys

import pytest
from fast_compile import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=400):
    env = cpu_env(PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _overrides(tmp):
    """A tiny synthetic dataset in `tmp`/data (generated on first use), two steps of 8 clips."""
    return [
        f"--config.data.root={tmp / 'data'}",
        "--config.data.synthetic.num_train=16",
        "--config.data.synthetic.num_val=8",
        "--config.data.num_workers=0",
        "--config.total_steps=2",
        "--config.batch_size=8",
        "--config.eval_batch_size=8",
        "--config.log_every_steps=1",
    ]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """Two training steps of configs/synthetic_tea8.py on a freshly generated tiny dataset."""
    tmp = tmp_path_factory.mktemp("synthetic")
    overrides = _overrides(tmp)
    workdir = tmp / "run"
    args = ["train.py", "--config", "configs/synthetic_tea8.py", f"--workdir={workdir}"]
    out = _run([*args, *overrides])
    return tmp, workdir, overrides, out


def test_train_writes_metrics_checkpoints_and_model(synthetic_run):
    """The default tier's end-to-end training run. Its fixture runs train.py (dataset generation,
    compiling the reduced TEA's training and evaluation steps, two steps, evaluation, export):
    1-4 minutes on 2 cores, nearly all of it compilation."""
    _, workdir, _, out = synthetic_run
    assert "Final validation top-1" in out
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    for split, steps in (("train", [1, 2]), ("val", [2])):
        rows = [r for r in records if r["split"] == split]
        assert [r["step"] for r in rows] == steps
        for key in ("loss", "top1", "top5", "lr", "clips_per_sec"):
            assert all(key in r for r in rows), (split, key)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    assert os.listdir(workdir / "tensorboard")
    assert (workdir / "curves.png").exists() and (workdir / "config.json").exists()
    assert (workdir / "model" / "model.json").exists()
    assert (workdir / "model" / "classes.txt").exists()


def test_eval_reports(synthetic_run):
    """eval.py on the run above: about a minute on 2 cores, compiling the reduced TEA's
    evaluation for two protocols in a subprocess."""
    _, workdir, overrides, _ = synthetic_run
    out = _run(
        [
            "eval.py",
            "--config",
            "configs/synthetic_tea8.py",
            f"--workdir={workdir}",
            "--protocols=efficient,config",
            *overrides,
            "--config.data.test_clips=2",
        ]
    )
    assert "efficient" in out and "config" in out
    for protocol in ("efficient", "config"):
        with open(workdir / f"eval_{protocol}.json") as f:
            report = json.load(f)
        assert report["num_videos"] == 8 and len(report["per_class_accuracy"]) == 8
        assert (workdir / f"confusion_{protocol}.png").exists()
        with open(workdir / f"predictions_{protocol}.jsonl") as f:
            assert len(f.readlines()) == 8


def test_predict_labels_a_video_file(synthetic_run):
    tmp, workdir, _, _ = synthetic_run
    video = tmp / "data" / "val" / sorted(os.listdir(tmp / "data" / "val"))[0]
    out = _run(["-m", "tea_jax.predict", "--checkpoint", str(workdir / "model"), str(video)])
    lines = out.strip().splitlines()
    assert lines[0] == str(video) and len(lines) == 6
    with open(workdir / "model" / "classes.txt") as f:
        names = {line.strip() for line in f}
    assert all(line.split(". ", 1)[1].rsplit(" ", 1)[0].strip() in names for line in lines[1:])


@pytest.mark.slow
def test_eval_checkpoint_converted_from_pytorch(tmp_path):
    """eval.py --checkpoint on the output of ``python -m tea_jax.convert tea``: about a minute on 2
    cores (two subprocesses: the conversion, and eval.py, which generates the tiny dataset and
    compiles the evaluation)."""
    pytest.importorskip("torch")
    from tests.test_convert import save_tea_checkpoint

    overrides = _overrides(tmp_path)  # eval.py generates the dataset; no training run needed
    save_tea_checkpoint(tmp_path / "ckpt.best.pth.tar", 8, num_classes=8)
    converted = tmp_path / "converted"
    _run(
        [
            "-m",
            "tea_jax.convert",
            "tea",
            f"--input={tmp_path / 'ckpt.best.pth.tar'}",
            f"--output={converted}",
            "--num-segments=8",
        ]
    )
    out = _run(
        [
            "eval.py",
            "--config",
            "configs/synthetic_tea8.py",
            f"--checkpoint={converted}",
            f"--workdir={tmp_path / 'eval'}",
            "--protocols=efficient",
            *overrides,
        ]
    )
    assert f"Checkpoint: {converted}" in out
    with open(tmp_path / "eval" / "eval_efficient.json") as f:
        report = json.load(f)
    assert report["num_videos"] == 8 and report["checkpoint"] == str(converted)


def test_unwritable_workdir_fails_at_start_with_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    workdir = blocker / "run"
    env = cpu_env(PYTHONPATH=ROOT)
    args = ["train.py", "--config", "configs/synthetic_tea8.py", f"--workdir={workdir}"]
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = f"error: --workdir {workdir} is not writable: Not a directory"
    assert proc.stderr.strip().splitlines()[-1] == expected, proc.stderr
