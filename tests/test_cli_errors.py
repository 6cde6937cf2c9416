"""The mistakes a user meets first, made on the real command lines: each ends with exit status 2,
``error: ...`` naming the file or key, and a hint line of what to do; no traceback.

Each train.py/eval.py case is a subprocess that stops before compiling anything: 2-9 s each on
2 shared cores, mostly importing JAX (the missing ``init_from`` case also traces the full-size TEA
for its FLOP count); the whole file takes 45-80 s."""

import os
import subprocess
import sys

import cv2
import local_servers
import numpy as np
import pytest
from fast_compile import cpu_env

from tea_jax import cli, convert
from tea_jax.data import DataError
from tea_jax.data.listfiles import PREPARE_DOCS, read_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, EVAL = os.path.join(ROOT, "train.py"), os.path.join(ROOT, "eval.py")
KINETICS = os.path.join(ROOT, "configs", "kinetics_tea16.py")


def _frames_dataset(root, videos=8):
    """A prepared frame dataset in `root` (the layout `prepare frames` writes): 8 folders of 4
    JPEG frames and the lists `train.txt`, `val.txt`."""
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    lines = []
    for v in range(videos):
        os.makedirs(root / f"v{v}")
        for f in range(4):
            (root / f"v{v}" / f"img_{f + 1:05d}.jpg").write_bytes(jpeg)
        lines.append(f"v{v} 4 {v % 2}\n")
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def _prepared(tmp):
    """Overrides pointing the Kinetics recipe at a tiny prepared frame dataset in `tmp`."""
    root = _frames_dataset(tmp / "frames")
    return [
        f"--config.data.root={root}",
        "--config.data.num_workers=0",
        "--config.batch_size=8",
        "--config.eval_batch_size=8",
    ]


def _video_list(tmp):
    """A list of video files (`path label`), where the Kinetics recipe expects frame folders."""
    root = tmp / "videos"
    root.mkdir()
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("".join(f"v{v}.mp4 {v % 2}\n" for v in range(8)))
    return [f"--config.data.root={root}", "--config.data.num_workers=0"]


# (name, command line after `python`, what stderr's error line names, what its hint line holds)
CASES = [
    (
        "paper recipe, no data prepared",
        lambda tmp: [TRAIN, "--config", KINETICS, "--workdir", "runs/k"],
        "data/kinetics400/frames/train.txt",
        "python -m tea_jax.data.prepare frames --list data/kinetics400/train.txt",
    ),
    (
        "prepared data, no converted ImageNet weights",
        lambda tmp: [TRAIN, "--config", KINETICS, "--workdir", "runs/k", *_prepared(tmp)],
        "pretrained/res2net50_26w_4s",
        convert.command_line("res2net50", "pretrained/res2net50_26w_4s"),
    ),
    (
        "a batch that does not divide into BatchNorm groups",
        lambda tmp: [TRAIN, "--config", KINETICS, "--workdir", "runs/k", "--config.batch_size=3"],
        "bn_group_clips=8",
        "--config.bn_group_clips=3 or --config.bn_group_clips=0",
    ),
    (
        "a video list read as frame folders",
        lambda tmp: [TRAIN, "--config", KINETICS, "--workdir", "runs/k", *_video_list(tmp)],
        "videos/train.txt:1",
        "--config.data.source=videos",
    ),
    (
        "eval.py on a missing workdir",
        lambda tmp: [EVAL, "--config", KINETICS, "--workdir", "runs/none", *_prepared(tmp)],
        "runs/none/checkpoints",
        "pass --checkpoint",
    ),
    (
        "eval.py on an empty workdir",
        lambda tmp: [
            EVAL,
            "--config",
            KINETICS,
            f"--workdir={(tmp / 'empty').mkdir() or tmp / 'empty'}",
            *_prepared(tmp),
        ],
        "empty/checkpoints",
        "pass --checkpoint",
    ),
    (
        "a --checkpoint that is not a model",
        lambda tmp: [
            EVAL,
            "--config",
            KINETICS,
            "--workdir=out",
            f"--checkpoint={tmp / 'frames'}",
            *_prepared(tmp),
        ],
        "frames: not a tea_jax model checkpoint",
        "python -m tea_jax.convert",
    ),
    (
        "an unknown --config. key",
        lambda tmp: [TRAIN, "--config", KINETICS, "--workdir", "runs/k", "--config.batchsize=3"],
        "--config.batchsize",
        "--config.batch_size",
    ),
    (
        "a config file that does not exist",
        lambda tmp: [TRAIN, "--config", "configs/kinetics_tea61.py", "--workdir", "runs/k"],
        "configs/kinetics_tea61.py",
        "configs/",
    ),
]


@pytest.mark.parametrize("name, args, named, hint", CASES, ids=[c[0] for c in CASES])
def test_mistake_is_one_line_and_a_hint(tmp_path, name, args, named, hint):
    """Run in an empty folder, as in a fresh clone before any data is prepared."""
    proc = subprocess.run(
        [sys.executable, *args(tmp_path)],
        cwd=tmp_path,
        env=cpu_env(PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == cli.EXIT_STATUS, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) <= 3, proc.stderr
    error, hint_line = lines[-2:]
    assert error.startswith("error: ") and named in error, proc.stderr
    assert hint_line.startswith("hint: ") and hint in hint_line, proc.stderr


def test_every_host_prints_it_with_its_index(tmp_path):
    """Two processes (one CPU device each) of one run, a global batch that does not split over
    their two devices: each prints the error, prefixed with its index (about 10 s)."""
    address = f"127.0.0.1:{local_servers.free_port()}"
    args = [TRAIN, "--config", KINETICS, "--workdir", "runs/k", "--config.batch_size=3"]
    args += [f"--coordinator_address={address}", "--num_processes=2", "--cpu_collectives=gloo"]
    procs = [
        subprocess.Popen(
            [sys.executable, *args, f"--process_id={i}"],
            cwd=tmp_path,
            env=cpu_env(PYTHONPATH=ROOT),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for i, proc in enumerate(procs):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == cli.EXIT_STATUS, stderr
        assert stderr.splitlines() == [
            f"[process {i}] error: config.batch_size=3 must be a multiple of the number of "
            "devices (2: 1 on each of 2 process(es)); the batch is split evenly over them.",
            f"[process {i}] hint: pass --config.batch_size=2",
        ]


def test_traceback_on_request(tmp_path):
    """TEA_JAX_TRACEBACK=1 shows where an expected error was raised."""
    proc = subprocess.run(
        [sys.executable, TRAIN, "--config", KINETICS, "--workdir", "runs/k"],
        cwd=tmp_path,
        env=cpu_env(PYTHONPATH=ROOT, **{cli.TRACEBACK_ENV: "1"}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "listfiles.py" in proc.stderr
    assert proc.stderr.strip().endswith("(No such file or directory)")


@pytest.mark.parametrize(
    "path, with_num_frames, command",
    [
        (
            "data/kinetics400/frames/train.txt",
            True,
            "prepare frames --list data/kinetics400/train.txt --root VIDEO_DIR "
            "--output data/kinetics400/frames",
        ),
        (  # Something-Something V1: `prepare lists` writes frame lists of the downloaded frames
            "data/something-something-v1/val.txt",
            True,
            "prepare lists --dataset NAME --manual_dir DOWNLOAD_DIR "
            "--output data/something-something-v1`",
        ),
        (
            "data/ucf101/train_split1.txt",
            False,
            "prepare lists --dataset NAME --manual_dir DOWNLOAD_DIR --output data/ucf101`",
        ),
    ],
)
def test_missing_list_names_the_command_that_writes_it(
    tmp_path, monkeypatch, path, with_num_frames, command
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=f"^{path}: cannot read list file") as error:
        read_list(path, with_num_frames=with_num_frames)
    assert f"`python -m tea_jax.data.{command}" in error.value.hint


def test_prepare_docs_section_exists():
    """The hints' docs section is a heading of docs/data.md."""
    from tests.test_docs import _anchors

    path, anchor = PREPARE_DOCS.split("#")
    assert anchor in _anchors(os.path.join(ROOT, path))


def test_convert_missing_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["res2net50", "--input", "nothere.pth", "--output", str(tmp_path / "x")])
    assert exit_info.value.code == cli.EXIT_STATUS
    assert capsys.readouterr().err.splitlines() == [
        "error: nothere.pth: no such file",
        "hint: docs/conversion.md says where the weights come from",
    ]


def test_unexpected_exception_keeps_its_traceback():
    @cli.command
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        main()
