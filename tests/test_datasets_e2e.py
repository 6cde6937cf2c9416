"""The dataset commands of docs/data.md, as written, on miniature replicas of the five datasets.

Each replica has the official download layout and annotation formats (UCF101 `classInd.txt` +
`trainlist01.txt`/`testlist01.txt`, HMDB51 `*_test_split1.txt`, Kinetics csv files,
Something-Something csv/json files), label files that are deliberately not in alphabetical order,
and a few 32x24 videos (avi, mp4, webm) or JPEG frame folders per class. The commands are taken
from docs/data.md (the test fails if one is missing there) and run from a fresh working directory,
so the configs' default paths are what is tested; `~` is the replica's home. Overrides are for
size only (reduced network, 24-pixel frames, 4 segments, two steps, one worker process) and for
the absent pretrained weights (`init_from`). Every list, record and TFDS example must carry the
released code's label of its video.
"""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from fast_compile import cpu_env

from tea_jax.data import records
from tea_jax.data.listfiles import read_class_names
from tea_jax.data.prepare import main as prepare
from tea_jax.data.video import write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = [
    "--config.num_segments=4",
    "--config.model_options.stage_sizes=(1,1,1,1)",
    "--config.model_options.width_multiplier=0.25",
    "--config.data.image_size=24",
    "--config.data.short_side=24",
    "--config.data.num_workers=0",
    "--config.batch_size=4",
    "--config.bn_group_clips=2",
    "--config.eval_batch_size=4",
    "--config.total_steps=2",
    "--config.init_from=",
]
# The second test tier: each test runs train.py and eval.py end to end.
pytestmark = pytest.mark.slow
CODECS = {".avi": ("avi", "mpeg4"), ".mp4": ("mp4", "libx264"), ".webm": ("webm", "libvpx-vp9")}


def readme_commands() -> set[str]:
    """The commands of docs/data.md's bash blocks, continuation lines joined, comments dropped."""
    with open(os.path.join(ROOT, "docs", "data.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    lines = (line.split(" #")[0] for line in text.splitlines())
    return {" ".join(line.split()) for line in lines if line.strip() and not line.startswith("#")}


def write_clip(path: str, seed: int, num_frames: int = 12) -> None:
    """A 32x24 clip of a bright square moving right, in the container and codec of the suffix."""
    import av

    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, 24, 32, 3), np.uint8)
    colour = rng.integers(64, 256, 3)
    for t in range(num_frames):
        frames[t, 8:16, t : t + 8] = colour
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1]
    if ext == ".mp4":
        write_video(path, frames)
        return
    if ext == ".jpg":
        from tea_jax.data.records import encode_jpeg

        os.makedirs(path[: -len(ext)], exist_ok=True)
        for t, frame in enumerate(frames):
            with open(os.path.join(path[: -len(ext)], f"{t + 1:05d}.jpg"), "wb") as f:
                f.write(encode_jpeg(frame))
        return
    container_format, codec = CODECS[ext]
    with av.open(path, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


class Replica:
    """A miniature download in a fresh working directory `work`, home `work/home`."""

    def __init__(self, work, name, cache):
        self.work, self.name, self.cache = work, name, cache
        self.manual = work / "home" / "datasets" / name
        self.label_of = {}  # video id (path below the dataset's video folder) -> class name

    def run(self, command: str, *extra: str) -> str:
        """Runs a documented command (checked to be in docs/data.md) with `extra` arguments."""
        assert command in readme_commands(), f"not in docs/data.md: {command}"
        args = shlex.split(command.replace("~", str(self.work / "home"))) + list(extra)
        if args[:3] == ["python", "-m", "tea_jax.data.prepare"]:
            with contextlib.chdir(self.work):
                prepare(args[3:])
            return ""
        if args[:3] == ["python", "-m", "tea_jax.predict"]:
            from tea_jax.predict import main as predict

            out = io.StringIO()
            with contextlib.chdir(self.work), contextlib.redirect_stdout(out):
                predict(args[3:])
            return out.getvalue()
        assert args[0] == "python" and args[1] in ("train.py", "eval.py"), command
        args = [sys.executable, os.path.join(ROOT, args[1]), *args[2:]]
        args = [os.path.join(ROOT, a) if a.startswith("configs/") else a for a in args]
        env = cpu_env(
            PYTHONPATH=ROOT,
            JAX_COMPILATION_CACHE_DIR=str(self.cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        )
        proc = subprocess.run(
            args, cwd=self.work, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    def check_list(self, path: str, classes: list[str], frames: bool) -> None:
        """Every line of a list names its video's class by the released index."""
        count = 0
        with open(self.work / path) as f:
            for line in f:
                fields = line.rsplit(None, 2 if frames else 1)  # paths may have spaces
                video = os.path.splitext(fields[0])[0]
                if frames and os.path.isabs(video):
                    video = os.path.basename(video)
                name = self.label_of[video]
                assert int(fields[-1]) == classes.index(name), (path, line)
                count += 1
        assert count > 0, path

    def check_records(self, folder: str, split: str, classes: list[str]) -> None:
        reader = records.FrameRecordReader(str(self.work / folder), split)
        assert len(reader)
        for i in range(len(reader)):
            video_id, label, num_frames = reader.video(i)
            video = os.path.splitext(video_id)[0]
            assert label == classes.index(self.label_of[video]), video_id
            assert reader.frame(i, num_frames - 1)[:2] == b"\xff\xd8", video_id
        meta = records.read_meta(str(self.work / folder))
        assert meta["classes"] == classes and meta["layouts"][split] == records.FRAME_RECORDS

    def check_tfds(self, name: str, classes: list[str]) -> None:
        import tensorflow_datasets as tfds

        data_dir = str(self.work / "home" / "tensorflow_datasets")
        builder = tfds.builder(name, data_dir=data_dir)
        total = 0
        for split in builder.info.splits:
            source = tfds.data_source(name, split=split, data_dir=data_dir)
            for i in range(len(source)):
                example = source[i]
                video = os.path.splitext(example["id"].decode())[0]
                assert example["label"] == classes.index(self.label_of[video]), video
                total += 1
        assert total == len(self.label_of)

    def train_eval(self, config: str, workdir: str, labels: str) -> dict:
        """train.py, then eval.py with both protocols; returns the accuracy protocol's report."""
        self.run(f"python train.py --config {config} --workdir {workdir}", *SIZE)
        out = self.run(
            f"python eval.py --config {config} --workdir {workdir} --protocols efficient,accuracy "
            f"--labels {labels}",
            *SIZE,
        )
        assert "efficient" in out and "accuracy" in out
        with open(self.work / workdir / "eval_accuracy.json") as f:
            report = json.load(f)
        with open(self.work / workdir / "eval_efficient.json") as f:
            assert json.load(f)["num_videos"] == report["num_videos"]
        return report

    def check_prediction(self, workdir: str, video: str, classes: list[str]) -> None:
        """predict names the classes of classes.txt (stored beside the exported model)."""
        assert read_class_names(str(self.work / workdir / "model" / "classes.txt")) == classes
        out = self.run(f"python -m tea_jax.predict --checkpoint {workdir}/model {video}")
        top = [line.split(".", 1)[1].rsplit(None, 1)[0].strip() for line in out.splitlines()[1:6]]
        assert len(top) == 5 and all(name in classes for name in top), out


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """One compilation cache for the five tests: V1 and V2 compile the same programs."""
    return tmp_path_factory.mktemp("jax_cache")


def fillers(count: int, prefix: str) -> list[str]:
    """Names of the classes that have no video in a replica (the annotation files list all)."""
    return [f"{prefix}{i:03d}" for i in range(count)]


# Classes with videos, in a non-alphabetical annotation order.
UCF = ["PlayingCello", "Archery", "Basketball"]


def test_ucf101(tmp_path, jax_cache):
    """UCF101's commands as documented; 1.5-2.5 minutes on 2 cores: train.py and eval.py
    run as subprocesses, each compiling the reduced network."""
    ucf = Replica(tmp_path / "ucf101", "ucf101", jax_cache)
    lists = ucf.manual / "ucfTrainTestlist"
    os.makedirs(lists)
    classes = UCF + fillers(98, "Zz")  # classInd.txt numbers all 101 classes, 1-based
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for label, name in enumerate(UCF):
        for group in (1, 2, 8, 9):
            video = f"{name}/v_{name}_g{group:02d}_c01.avi"
            write_clip(str(ucf.manual / "UCF-101" / video), 10 * label + group)
            ucf.label_of[os.path.splitext(video)[0]] = name
            (test if group < 8 else train).append((video, label))
    (lists / "trainlist01.txt").write_text("".join(f"{v} {label + 1}\n" for v, label in train))
    (lists / "testlist01.txt").write_text("".join(f"{v}\n" for v, _ in test))

    ucf.run(
        "python -m tea_jax.data.prepare lists --dataset ucf101 --fold 1 "
        "--manual_dir ~/datasets/ucf101 --output data/ucf101"
    )
    assert read_class_names(str(ucf.work / "data/ucf101/classes.txt")) == classes
    for split in ("train", "test"):
        ucf.run(
            f"python -m tea_jax.data.prepare frames --list data/ucf101/{split}_split1.txt "
            "--root ~/datasets/ucf101/UCF-101 --output data/ucf101/frames --short_side 256",
            "--workers",
            "1",
        )
        ucf.check_list(f"data/ucf101/{split}_split1.txt", classes, frames=False)
        ucf.check_list(f"data/ucf101/frames/{split}_split1.txt", classes, frames=True)
    ucf.run(
        "python -m tea_jax.data.prepare arrayrecord --kind frames "
        "--list data/ucf101/frames/train_split1.txt --root data/ucf101/frames "
        "--output data/ucf101/arrayrecord --split train --num_classes 101",
        "--workers",
        "1",
    )
    ucf.check_records("data/ucf101/arrayrecord", "train", classes)

    report = ucf.train_eval(
        "configs/ucf101_tea16_ft.py", "runs/ucf101_tea16_ft", "data/ucf101/classes.txt"
    )
    assert report["num_videos"] == len(test)
    ucf.check_prediction(
        "runs/ucf101_tea16_ft",
        "~/datasets/ucf101/UCF-101/Archery/v_Archery_g01_c01.avi",
        classes,
    )


def test_hmdb51(tmp_path, jax_cache):
    """HMDB51's commands as documented; 1.5-2.5 minutes on 2 cores: train.py and eval.py
    run as subprocesses, each compiling the reduced network."""
    hmdb = Replica(tmp_path / "hmdb51", "hmdb51", jax_cache)
    splits = hmdb.manual / "testTrainMulti_7030_splits"
    os.makedirs(splits)
    names = ["wave", "brush_hair", "cartwheel"]
    for name in fillers(48, "zz_"):
        (splits / f"{name}_test_split1.txt").write_text("")
    for label, name in enumerate(names):
        lines = []
        for k, kind in enumerate((1, 1, 2, 2, 0)):  # 1 train, 2 test, 0 unused
            video = f"{name}_clip{k}.avi"
            if kind:
                write_clip(str(hmdb.manual / "hmdb51" / name / video), 10 * label + k)
                hmdb.label_of[f"{name}/{video[:-4]}"] = name
            lines.append(f"{video} {kind} \n")
        (splits / f"{name}_test_split1.txt").write_text("".join(lines))
    classes = sorted([*names, *fillers(48, "zz_")])

    hmdb.run(
        "python -m tea_jax.data.prepare lists --dataset hmdb51 --fold 1 "
        "--manual_dir ~/datasets/hmdb51 --output data/hmdb51"
    )
    assert read_class_names(str(hmdb.work / "data/hmdb51/classes.txt")) == classes
    for split in ("train", "test"):
        hmdb.run(
            f"python -m tea_jax.data.prepare frames --list data/hmdb51/{split}_split1.txt "
            "--root ~/datasets/hmdb51/hmdb51 --output data/hmdb51/frames --short_side 256",
            "--workers",
            "1",
        )
        hmdb.check_list(f"data/hmdb51/frames/{split}_split1.txt", classes, frames=True)
    hmdb.run(
        "python -m tea_jax.data.prepare tfds --dataset hmdb51 --fold 1 "
        "--manual_dir ~/datasets/hmdb51 --data_dir ~/tensorflow_datasets",
        "--workers",
        "1",
    )
    hmdb.check_tfds("hmdb51_jpeg/split1", classes)
    report = hmdb.train_eval(
        "configs/hmdb51_tea16_ft.py", "runs/hmdb51_tea16_ft", "data/hmdb51/classes.txt"
    )
    assert report["num_videos"] == 6


def test_kinetics400(tmp_path, jax_cache):
    """Kinetics-400's commands as documented; 1.5-2.5 minutes on 2 cores: train.py and eval.py
    run as subprocesses, each compiling the reduced network."""
    k400 = Replica(tmp_path / "kinetics400", "kinetics400", jax_cache)
    names = ["zumba", "abseiling", "playing cello"]
    header = "label,youtube_id,time_start,time_end,split\n"
    rows = {"train": [], "validate": []}
    for label, name in enumerate(names):
        for k, split in enumerate(("train", "train", "validate", "validate")):
            youtube_id = f"{name[:3]}{k}xyz"
            video = f"{youtube_id}_{10 * k:06d}_{10 * k + 10:06d}"
            folder = "train" if split == "train" else "val"
            path = f"{folder}/{name.replace(' ', '_')}/{video}"
            write_clip(str(k400.manual / f"{path}.mp4"), 10 * label + k)
            k400.label_of[path] = name
            rows[split].append(f"{name},{youtube_id},{10 * k},{10 * k + 10},{split}\n")
    # Every class of the annotations; the clips of these were not downloaded.
    missing = [f"{name},missing{i},0,10,train\n" for i, name in enumerate(fillers(397, "class "))]
    (k400.manual / "train.csv").write_text(header + "".join(missing + rows["train"]))
    (k400.manual / "validate.csv").write_text(header + "".join(rows["validate"]))
    classes = sorted([*names, *fillers(397, "class ")])

    k400.run(
        "python -m tea_jax.data.prepare lists --dataset kinetics400 "
        "--manual_dir ~/datasets/kinetics400 --output data/kinetics400"
    )
    assert read_class_names(str(k400.work / "data/kinetics400/classes.txt")) == classes
    for split in ("train", "val"):
        k400.run(
            f"python -m tea_jax.data.prepare frames --list data/kinetics400/{split}.txt "
            "--root ~/datasets/kinetics400 --output data/kinetics400/frames --short_side 256",
            "--workers",
            "1",
        )
        k400.check_list(f"data/kinetics400/frames/{split}.txt", classes, frames=True)
    k400.run(
        "python -m tea_jax.data.prepare arrayrecord --kind videos --list data/kinetics400/val.txt "
        "--root ~/datasets/kinetics400 --output data/kinetics400/arrayrecord --split val "
        "--num_classes 400",
        "--workers",
        "1",
    )
    k400.check_records("data/kinetics400/arrayrecord", "val", classes)
    report = k400.train_eval(
        "configs/kinetics_tea16.py", "runs/kinetics_tea16", "data/kinetics400/classes.txt"
    )
    assert report["num_videos"] == 6


SOMETHING = ["Pushing something from left to right", "Holding something", "Tearing something"]


def test_something_something_v1(tmp_path, jax_cache):
    """Something-Something V1's commands as documented; 1.5-2.5 minutes on 2 cores: train.py and
    eval.py run as subprocesses, each compiling the reduced network."""
    ss1 = Replica(tmp_path / "ssv1", "something-something-v1", jax_cache)
    os.makedirs(ss1.manual)
    annotated = SOMETHING + fillers(171, "Zz something ")
    (ss1.manual / "something-something-v1-labels.csv").write_text("\n".join(annotated) + "\n")
    rows = {"train": [], "validation": []}
    for label, name in enumerate(SOMETHING):
        for k, split in enumerate(("train", "train", "validation", "validation")):
            video_id = str(100 + 10 * label + k)
            write_clip(str(ss1.manual / "20bn-something-something-v1" / f"{video_id}.jpg"), label)
            ss1.label_of[video_id] = name
            rows[split].append(f"{video_id};{name}\n")
    for split, lines in rows.items():
        (ss1.manual / f"something-something-v1-{split}.csv").write_text("".join(lines))
    classes = sorted(annotated)  # the released gen_label_sthv1.py sorts the label CSV

    ss1.run(
        "python -m tea_jax.data.prepare lists --dataset something_something_v1 "
        "--manual_dir ~/datasets/something-something-v1 --output data/something-something-v1"
    )
    assert read_class_names(str(ss1.work / "data/something-something-v1/classes.txt")) == classes
    for split in ("train", "val"):
        ss1.check_list(f"data/something-something-v1/{split}.txt", classes, frames=True)
    ss1.run(
        "python -m tea_jax.data.prepare arrayrecord --kind frames "
        "--list data/something-something-v1/train.txt --template {:05d}.jpg "
        "--output data/something-something-v1/arrayrecord --split train --num_classes 174",
        "--workers",
        "1",
    )
    reader = records.FrameRecordReader(
        str(ss1.work / "data/something-something-v1/arrayrecord"), "train"
    )
    for i in range(len(reader)):
        video_id, label, _ = reader.video(i)
        assert label == classes.index(ss1.label_of[os.path.basename(video_id)])
    ss1.run(
        "python -m tea_jax.data.prepare tfds --dataset something_something_v1 "
        "--manual_dir ~/datasets/something-something-v1 --data_dir ~/tensorflow_datasets",
        "--workers",
        "1",
    )
    ss1.check_tfds("something_something_v1_jpeg", classes)
    report = ss1.train_eval(
        "configs/sthv1_tea8.py", "runs/sthv1_tea8", "data/something-something-v1/classes.txt"
    )
    assert report["num_videos"] == 6


def test_something_something_v2(tmp_path, jax_cache):
    """Something-Something V2's commands as documented; 1.5-2.5 minutes on 2 cores: train.py and
    eval.py run as subprocesses, each compiling the reduced network."""
    ss2 = Replica(tmp_path / "ssv2", "something-something-v2", jax_cache)
    os.makedirs(ss2.manual)
    # The labels JSON numbers the templates; its order is neither alphabetical nor the file's.
    annotated = fillers(171, "Zz something ") + SOMETHING
    index = {name: (7 * i) % 174 for i, name in enumerate(annotated)}
    (ss2.manual / "something-something-v2-labels.json").write_text(
        json.dumps({name: str(i) for name, i in index.items()})
    )
    rows = {"train": [], "validation": []}
    for label, name in enumerate(SOMETHING):
        template = name.replace("something", "[something]")
        for k, split in enumerate(("train", "train", "validation", "validation")):
            video_id = str(1 + 10 * label + k)
            write_clip(str(ss2.manual / "20bn-something-something-v2" / f"{video_id}.webm"), k)
            ss2.label_of[video_id] = name
            rows[split].append({"id": video_id, "label": name, "template": template})
    for split, items in rows.items():
        (ss2.manual / f"something-something-v2-{split}.json").write_text(json.dumps(items))
    classes = sorted(annotated, key=index.get)

    ss2.run(
        "python -m tea_jax.data.prepare lists --dataset something_something_v2 "
        "--manual_dir ~/datasets/something-something-v2 --output data/something-something-v2"
    )
    assert read_class_names(str(ss2.work / "data/something-something-v2/classes.txt")) == classes
    for split in ("train", "val"):
        ss2.run(
            f"python -m tea_jax.data.prepare frames --list data/something-something-v2/{split}.txt "
            "--root ~/datasets/something-something-v2/20bn-something-something-v2 "
            "--output data/something-something-v2/frames --short_side 256",
            "--workers",
            "1",
        )
        ss2.check_list(f"data/something-something-v2/frames/{split}.txt", classes, frames=True)
    ss2.run(
        "python -m tea_jax.data.prepare tfds --dataset something_something_v2 "
        "--manual_dir ~/datasets/something-something-v2 --data_dir ~/tensorflow_datasets",
        "--workers",
        "1",
    )
    ss2.check_tfds("something_something_v2_jpeg", classes)
    report = ss2.train_eval(
        "configs/sthv2_tea16.py", "runs/sthv2_tea16", "data/something-something-v2/classes.txt"
    )
    assert report["num_videos"] == 6
    ss2.check_prediction(
        "runs/sthv2_tea16",
        "~/datasets/something-something-v2/20bn-something-something-v2/1.webm",
        classes,
    )


def make_hd_clip(path: str, seconds: float = 1.0) -> None:
    """A 1920x1080 h264 clip at 30 fps: a gradient panning right."""
    import av

    xs = np.arange(1920 * 2, dtype=np.uint32)
    scene = np.broadcast_to(((xs * 255) // xs[-1]).astype(np.uint8)[None, :, None], (1080, 3840, 3))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        count = int(30 * seconds)
        for t in range(count):
            frame = np.ascontiguousarray(scene[:, 64 * t : 64 * t + 1920])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def run_killed(replica: Replica, command: str, extra: list[str], ready) -> None:
    """Runs a documented command in its own process; SIGKILLs it as soon as `ready()` holds."""
    import signal
    import time

    assert command in readme_commands(), f"not in docs/data.md: {command}"
    args = shlex.split(command.replace("~", str(replica.work / "home"))) + extra
    proc = subprocess.Popen(
        [sys.executable, *args[1:]],
        cwd=replica.work,
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not ready():
        assert proc.poll() is None, f"finished (exit {proc.returncode}) before the kill"
        assert time.monotonic() < deadline, "not ready after 240 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def uninterrupted(replica: Replica, command: str, output: str, extra: list[str]) -> None:
    """Runs a prepare command as written but for its --output."""
    args = shlex.split(command.replace("~", str(replica.work / "home")))[3:]
    with contextlib.chdir(replica.work):
        prepare([*args, "--output", output, *extra])


def tree(folder) -> dict:
    """Relative path -> bytes of every file below `folder`."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def all_records(folder, split: str) -> list:
    reader = records.FrameRecordReader(str(folder), split)
    return [
        (*reader.video(i), [reader.frame(i, f) for f in range(reader.video(i)[2])])
        for i in range(len(reader))
    ]


@pytest.mark.parametrize("layout", ["mirror", "activitynet"])
def test_kinetics400_as_downloaded_killed_and_resumed(tmp_path, jax_cache, layout):
    """A Kinetics-400 download in the layout of the public mirrors (`annotations/{train,val,
    test}.csv`, flat `train/`, `val/`, `test/`) or of the ActivityNet downloader (`train.csv`,
    `validate.csv`, `<split>/<class name>/`), with a missing video, a corrupt one and a 1080p
    clip per split, through the commands of docs/data.md; `prepare frames` and `prepare arrayrecord`
    are killed part-way (SIGKILL, in the 1080p clip) and run again: their outputs equal those
    of uninterrupted runs. Then train.py reads the frames. About 80 s on the 2-core machine,
    most of it train.py's compilation (35 s with the compilation cache of the other layout)."""
    k400 = Replica(tmp_path / layout, "kinetics400", jax_cache)
    names = ["zumba", "abseiling", "playing cello"]
    mirror = layout == "mirror"
    rows = {"train": [], "val": []}

    def add(split: str, name: str, youtube_id: str, start: int, video: str | None) -> None:
        rows[split].append(f"{name},{youtube_id},{start},{start + 10},{split}\n")
        if video is None:  # annotated, not downloaded
            return
        stem = f"{youtube_id}_{start:06d}_{start + 10:06d}"
        folder = split if mirror else f"{split}/{name}"
        path = str(k400.manual / folder / f"{stem}.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if video == "hd":
            make_hd_clip(path)
        elif video == "corrupt":
            with open(path, "wb") as f:
                f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
        else:
            write_clip(path, len(k400.label_of))
        k400.label_of[f"{folder}/{stem}"] = name
        k400.label_of[f"{folder.replace(' ', '_')}/{stem}"] = name

    for label, name in enumerate(names):
        for k in range(4):
            add("train" if k < 2 else "val", name, f"{name[:3]}{k}xyz", 10 * k, "small")
        if label == 1:
            add("train", name, "hdtrain", 0, "hd")
            add("val", name, "hdval", 0, "hd")
            add("val", name, "broken", 0, "corrupt")
            add("val", name, "notdownloaded", 0, None)
    # Every class of the annotations; the clips of these were not downloaded.
    rows["train"] = [
        *(f"{name},missing{i},0,10,train\n" for i, name in enumerate(fillers(397, "class "))),
        *rows["train"],
    ]
    header = "label,youtube_id,time_start,time_end,split\n"
    for split, lines in rows.items():
        name = f"annotations/{split}.csv" if mirror else f"{split.replace('val', 'validate')}.csv"
        os.makedirs(os.path.dirname(k400.manual / name), exist_ok=True)
        (k400.manual / name).write_text(header + "".join(lines))
    classes = sorted([*names, *fillers(397, "class ")])

    k400.run(
        "python -m tea_jax.data.prepare lists --dataset kinetics400 "
        "--manual_dir ~/datasets/kinetics400 --output data/kinetics400"
    )
    assert read_class_names(str(k400.work / "data/kinetics400/classes.txt")) == classes
    data = k400.work / "data/kinetics400"
    assert (data / "val_missing.txt").read_text() == "notdownloaded_000000_000010\n"
    assert len((data / "train_missing.txt").read_text().splitlines()) == 397
    for split in ("train", "val"):
        k400.check_list(f"data/kinetics400/{split}.txt", classes, frames=False)

    workers = ["--workers", "1"]
    frames = data / "frames"
    command = (
        "python -m tea_jax.data.prepare frames --list data/kinetics400/{}.txt "
        "--root ~/datasets/kinetics400 --output data/kinetics400/frames --short_side 256"
    )

    def in_hd_clip() -> bool:  # a finished video, and the 1080p one half written
        partial = [p for p in frames.rglob("hdtrain*.partial") if len(os.listdir(p)) >= 3]
        return bool(partial) and any(
            not p.parent.name.endswith(".partial") for p in frames.rglob("img_00012.jpg")
        )

    run_killed(k400, command.format("train"), workers, in_hd_clip)
    assert not (frames / "train.txt").exists() and list(frames.rglob("*.partial"))
    for split in ("train", "val"):
        k400.run(command.format(split), *workers)
        k400.check_list(f"data/kinetics400/frames/{split}.txt", classes, frames=True)
        uninterrupted(k400, command.format(split), "reference/frames", workers)
    assert tree(frames) == tree(k400.work / "reference/frames")
    assert (
        (frames / "val_failures.txt")
        .read_text()
        .startswith(
            str(k400.manual / ("val" if mirror else "val/abseiling") / "broken_000000_000010.mp4")
        )
    )
    assert not list(frames.rglob("*.partial"))

    output = data / "arrayrecord"
    command = (
        "python -m tea_jax.data.prepare arrayrecord --kind videos --list data/kinetics400/val.txt "
        "--root ~/datasets/kinetics400 --output data/kinetics400/arrayrecord --split val "
        "--num_classes 400"
    )
    shards = [*workers, "--num_shards", "3"]

    def in_later_shard() -> bool:  # a shard finished, another being written
        progress = output / "val.progress"
        return bool(list(progress.glob("*.msgpack"))) and bool(list(progress.glob("*.partial")))

    run_killed(k400, command, shards, in_later_shard)
    assert not os.path.exists(records.index_path(str(output), "val"))
    k400.run(command, *shards)
    uninterrupted(k400, command, "reference/ar", shards)
    assert all_records(output, "val") == all_records(k400.work / "reference/ar", "val")
    k400.check_records("data/kinetics400/arrayrecord", "val", classes)

    k400.run(
        "python train.py --config configs/kinetics_tea8.py --workdir runs/kinetics_tea8", *SIZE
    )
    assert os.path.isdir(k400.work / "runs/kinetics_tea8/model")
