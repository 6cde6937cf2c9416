"""Preparation CLIs, and the same frames from a video in its three storage forms."""

import os
import shutil

import numpy as np
import pytest

from tea_jax.data import create_loader, default_config, records
from tea_jax.data.prepare import main as prepare
from tea_jax.data.video import write_video


def _coded_video(num_frames, first):
    """(T, 32, 48, 3): red = frame number * 10 + first, green = x * 5, blue = y * 7."""
    ys, xs = np.mgrid[:32, :48]
    return np.stack(
        [
            np.stack([np.full_like(xs, 10 * f + first), 5 * xs, 7 * ys], -1)
            for f in range(num_frames)
        ]
    ).astype(np.uint8)


@pytest.fixture(scope="module")
def data_forms(tmp_path_factory):
    """Two videos stored as mp4, as frame folders and as ArrayRecord shards (from either)."""
    root = tmp_path_factory.mktemp("forms")
    os.makedirs(root / "videos" / "a")
    lines = []
    for i, count in enumerate((20, 26)):
        write_video(str(root / "videos" / "a" / f"clip_{i}.mp4"), _coded_video(count, 2 * i))
        lines.append(f"a/clip_{i}.mp4 {i}")
    (root / "videos.txt").write_text("\n".join(lines) + "\n")
    frames, videos = root / "frames", root / "videos"
    prepare(
        f"frames --list {root}/videos.txt --root {videos} --output {frames} --workers 1".split()
    )
    shards = "arrayrecord --workers 1 --output {} --split {} --kind {} --list {} --root {}"
    for split in ("val", "train"):
        options = shards.format(root / "ar_frames", split, "frames", frames / "videos.txt", frames)
        prepare([*options.split(), "--num_classes", "2"])
    options = shards.format(root / "ar_videos", "val", "videos", root / "videos.txt", videos)
    prepare([*options.split(), "--num_shards", "2"])
    options = shards.format(root / "ar_small", "val", "videos", root / "videos.txt", videos)
    prepare([*options.split(), "--short_side", "16"])
    return root


def _configs(root):
    base = default_config()
    base.update(
        num_workers=0, image_size=24, short_side=32, num_classes=2, test_clip_sampling="fixed"
    )
    forms = {
        "videos": {
            "source": "videos",
            "root": str(root / "videos"),
            "val_list": str(root / "videos.txt"),
        },
        "frames": {"source": "frames", "root": str(root / "frames"), "val_list": "videos.txt"},
        "ar_frames": {"source": "arrayrecord", "root": str(root / "ar_frames")},
        "ar_videos": {"source": "arrayrecord", "root": str(root / "ar_videos")},
    }
    for name, options in forms.items():
        cfg = base.copy_and_resolve_references()
        cfg.update(options, train_list=options.get("val_list", ""))
        yield name, cfg


def test_frame_folders_and_list(data_forms):
    assert (data_forms / "frames" / "videos.txt").read_text().split("\n")[:2] == [
        "a/clip_0 20 0",
        "a/clip_1 26 1",
    ]
    assert len(os.listdir(data_forms / "frames" / "a" / "clip_1")) == 26
    meta = records.read_meta(str(data_forms / "ar_videos"))
    assert meta == {"num_classes": 2, "splits": {"val": 2}, "layouts": {"val": 2}}
    assert len(records.shard_paths(str(data_forms / "ar_videos"), "val")) == 2


def test_identical_frames_across_storage_forms(data_forms):
    views = {}
    for name, cfg in _configs(data_forms):
        loader = create_loader(
            cfg, "val", batch_size=2, num_segments=4, seed=0, protocol="accuracy"
        )
        views[name] = next(iter(loader))
    reference = views.pop("videos")
    for name, batch in views.items():
        order = np.argsort(batch["label"])
        np.testing.assert_array_equal(batch["label"][order], reference["label"])
        difference = np.abs(batch["video"][order].astype(int) - reference["video"])
        assert difference.mean() < 3 and np.percentile(difference, 99) < 12, name  # JPEG q90
    # The sampled frames (red = 10 * frame number, up to 4:2:0 chroma bleeding).
    red = reference["video"][0, :, :, 12, 12, 0].astype(int)  # clip 0: 20 frames
    expected = np.array([[int(20 / 4 * (k + (c + 0.5) / 10)) for k in range(4)] for c in range(10)])
    assert np.abs(red - 10 * np.repeat(expected, 3, axis=0)).max() <= 4


def test_identical_training_clips_across_storage_forms(data_forms):
    batches = {}
    for name, cfg in _configs(data_forms):
        if name == "ar_videos":  # only the validation split was written
            continue
        cfg.flip = False
        loader = create_loader(cfg, "train", batch_size=2, num_segments=4, seed=7)
        batches[name] = next(iter(loader))
    reference = batches.pop("videos")
    for name, batch in batches.items():  # the records keep the list order here
        np.testing.assert_array_equal(batch["label"], reference["label"])
        assert np.abs(batch["video"].astype(int) - reference["video"]).mean() < 3, name


def test_resize_at_preparation(data_forms):
    cfg = default_config()
    cfg.update(
        source="arrayrecord",
        root=str(data_forms / "ar_small"),
        num_workers=0,
        image_size=16,
        short_side=None,
    )
    batch = next(iter(create_loader(cfg, "val", batch_size=2, num_segments=2, seed=0)))
    assert batch["video"].shape == (2, 1, 2, 16, 16, 3)
    reader = records.FrameRecordReader(str(data_forms / "ar_small"), "val")
    video_id, _, num_frames = reader.video(0)
    assert video_id.startswith("a/clip_") and num_frames in (20, 26)
    from tea_jax.data.sources import decode_image

    assert decode_image(reader.frame(0, 0), "frame").shape == (16, 24, 3)


def test_record_label_outside_classes_is_bad_input(data_forms, tmp_path):
    with records.ShardedWriter(str(tmp_path), "val", 1) as writer:
        writer.write(records.encode("x", 5, [records.encode_jpeg(np.zeros((8, 8, 3), np.uint8))]))
    records.write_meta(str(tmp_path), {"num_classes": 2})
    cfg = default_config()
    cfg.update(source="arrayrecord", root=str(tmp_path), num_workers=0, image_size=8, short_side=8)
    with pytest.raises(Exception, match=r"label 5 outside \[0, 2\)"):
        next(iter(create_loader(cfg, "val", batch_size=1, num_segments=2, seed=0)))


def _fake_ucf101(root):
    os.makedirs(root / "ucfTrainTestlist")
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi 2\n"
    )
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")


def test_lists_from_official_annotations(tmp_path):
    _fake_ucf101(tmp_path / "ucf")
    prepare(
        [
            "lists",
            "--dataset",
            "ucf101",
            "--manual_dir",
            str(tmp_path / "ucf"),
            "--output",
            str(tmp_path / "lists"),
        ]
    )
    assert (tmp_path / "lists" / "train_split1.txt").read_text() == (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\nArchery/v_Archery_g08_c01.avi 1\n"
    )
    assert (
        tmp_path / "lists" / "test_split1.txt"
    ).read_text() == "Archery/v_Archery_g01_c01.avi 1\n"
    assert (tmp_path / "lists" / "classes.txt").read_text() == "ApplyEyeMakeup\nArchery\n"

    hmdb = tmp_path / "hmdb" / "testTrainMulti_7030_splits"
    os.makedirs(hmdb)
    (hmdb / "brush_hair_test_split2.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (hmdb / "cartwheel_test_split2.txt").write_text("d.avi 2\n")
    prepare(
        [
            "lists",
            "--dataset",
            "hmdb51",
            "--fold",
            "2",
            "--manual_dir",
            str(tmp_path / "hmdb"),
            "--output",
            str(tmp_path / "h"),
        ]
    )
    assert (tmp_path / "h" / "train_split2.txt").read_text() == "brush_hair/a.avi 0\n"
    assert (
        tmp_path / "h" / "test_split2.txt"
    ).read_text() == "brush_hair/b.avi 0\ncartwheel/d.avi 1\n"


def test_kinetics_and_something_something_annotations(tmp_path):
    from tea_jax.data import datasets

    k400 = tmp_path / "k400"
    os.makedirs(k400 / "annotations")
    os.makedirs(k400 / "train" / "abseiling")
    (k400 / "train" / "abseiling" / "aaa_000010_000020.mp4").write_bytes(b"")
    (k400 / "bbb.mp4").write_bytes(b"")
    header = "label,youtube_id,time_start,time_end,split\n"
    (k400 / "annotations" / "train.csv").write_text(
        header + "abseiling,aaa,10,20,train\nzumba,bbb,0,10,train\nzumba,ccc,0,10,train\n"
    )
    (k400 / "annotations" / "val.csv").write_text(header + "zumba,bbb,0,10,val\n")
    k = datasets.load("kinetics400", str(k400))
    assert k.classes == ["abseiling", "zumba"]
    assert k.splits == {
        "train": [("train/abseiling/aaa_000010_000020.mp4", 0), ("bbb.mp4", 1)],
        "val": [("bbb.mp4", 1)],
    }
    assert k.missing == {"train": ["ccc_000000_000010"], "val": []}
    # An unlabelled test.csv (the original Kinetics-400 release): no example, nothing missing.
    (k400 / "annotations" / "test.csv").write_text(
        "youtube_id,time_start,time_end,split\nddd,0,10,test\n"
    )
    k = datasets.load("kinetics400", str(k400))
    assert k.splits["test"] == [] and k.missing["test"] == []

    ss1 = tmp_path / "ss1"
    os.makedirs(ss1)
    # The released gen_label_sthv1.py numbers V1 classes in alphabetical order, not the CSV's.
    (ss1 / "something-something-v1-labels.csv").write_text("Pushing something\nHolding something\n")
    (ss1 / "something-something-v1-train.csv").write_text("12;Pushing something\n")
    (ss1 / "something-something-v1-validation.csv").write_text("7;Holding something\n")
    v1 = datasets.load("something_something_v1", str(ss1))
    assert v1.classes == ["Holding something", "Pushing something"]
    assert v1.splits == {"train": [("12", 1)], "val": [("7", 0)]} and v1.template == "{:05d}.jpg"

    ss2 = tmp_path / "ss2"
    os.makedirs(ss2)
    (ss2 / "something-something-v2-labels.json").write_text(
        '{"Holding something": "0", "Putting something on something": "1"}'
    )
    row = (
        '[{"id": "5", "label": "putting a cup on a table", '
        '"template": "Putting [something] on [something]"}]'
    )
    (ss2 / "something-something-v2-train.json").write_text(row)
    (ss2 / "something-something-v2-validation.json").write_text("[]")
    v2 = datasets.load("something_something_v2", str(ss2))
    assert v2.splits == {"train": [("5.webm", 1)], "val": []}
    assert v2.classes == ["Holding something", "Putting something on something"]


def test_layout_1_shards_still_read(data_forms, tmp_path):
    """Shards of one record per video (no `layouts` in meta.json) give the same clips."""
    frames = data_forms / "frames"
    with records.ShardedWriter(str(tmp_path), "val", 1) as writer:
        for i, count in enumerate((20, 26)):
            folder = frames / "a" / f"clip_{i}"
            encoded = [(folder / f"img_{f + 1:05d}.jpg").read_bytes() for f in range(count)]
            writer.write(records.encode(f"a/clip_{i}", i, encoded))
    records.write_meta(str(tmp_path), {"num_classes": 2, "splits": {"val": 2}})
    batches = {}
    for name, root in (("layout 1", tmp_path), ("layout 2", data_forms / "ar_frames")):
        cfg = default_config()
        cfg.update(source="arrayrecord", root=str(root), num_workers=0, image_size=24)
        cfg.short_side = 32
        batches[name] = next(iter(create_loader(cfg, "val", batch_size=2, num_segments=4, seed=0)))
    np.testing.assert_array_equal(batches["layout 1"]["video"], batches["layout 2"]["video"])
    np.testing.assert_array_equal(batches["layout 1"]["label"], batches["layout 2"]["label"])


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_clip_reads_only_its_frames(data_forms):
    from tea_jax.data.sources import ArrayRecordSource

    source = ArrayRecordSource(str(data_forms / "ar_frames"), "val")
    clip = source.open(1)
    assert clip.num_frames == 26
    clip.read([0])  # opens the shard
    sizes = [f.stat().st_size for f in sorted((data_forms / "frames" / "a" / "clip_1").iterdir())]
    before = _bytes_read()
    clip.read([3, 10, 17, 10])
    read = _bytes_read() - before
    frame_bytes = sizes[3] + sizes[10] + sizes[17]
    # The three frames, and at most a kilobyte each of chunk headers and read-ahead.
    assert frame_bytes <= read < frame_bytes + 3 * 1024 and read < sum(sizes) / 4


def test_records_in_worker_processes_resume_exactly(data_forms):
    """A layout-2 source pickled into a worker reads the same clips; the iterator resumes."""
    cfg = default_config()
    cfg.update(source="arrayrecord", root=str(data_forms / "ar_frames"), image_size=16)
    cfg.short_side = 16

    def loader(workers):
        cfg.num_workers = workers
        return iter(create_loader(cfg, "train", batch_size=2, num_segments=3, seed=0))

    iterator = loader(0)
    first = [next(iterator) for _ in range(3)]  # three epochs of the two videos
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(2)]
    resumed = loader(0)
    resumed.set_state(state)
    for a, b in zip(expected, [next(resumed) for _ in range(2)], strict=True):
        np.testing.assert_array_equal(a["video"], b["video"])
        np.testing.assert_array_equal(a["label"], b["label"])
    in_worker = loader(1)
    for a, b in zip(first, [next(in_worker) for _ in range(3)], strict=True):
        np.testing.assert_array_equal(a["video"], b["video"])


def test_streamed_frames_equal_random_access(tmp_path):
    from tea_jax.data.transforms import resize_short_side
    from tea_jax.data.video import VideoFile, iter_frames

    path = str(tmp_path / "clip.mp4")
    write_video(path, _coded_video(20, 0))
    with VideoFile(path) as video:
        expected = video.read(range(video.num_frames))
    np.testing.assert_array_equal(np.stack(list(iter_frames(path, None))), expected)
    resized = np.stack([resize_short_side(f, 16) for f in expected])
    np.testing.assert_array_equal(np.stack(list(iter_frames(path, 16))), resized)


def _files(folder) -> dict:
    """Relative path -> bytes of every file below `folder`."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def videos(tmp_path):
    """Four 20-frame clips, a corrupt one (list position 1) and a missing one (position 4)."""
    os.makedirs(tmp_path / "videos" / "a")
    for i in range(4):
        write_video(str(tmp_path / "videos" / "a" / f"clip_{i}.mp4"), _coded_video(20, i))
    (tmp_path / "videos" / "a" / "bad.mp4").write_bytes(b"not a video" * 50)
    lines = ["a/clip_0.mp4 0", "a/bad.mp4 1", "a/clip_1.mp4 1", "a/clip_2.mp4 0", "a/gone.mp4 1"]
    (tmp_path / "videos.txt").write_text("\n".join([*lines, "a/clip_3.mp4 1"]) + "\n")
    return tmp_path


def _frames(root, output, *extra):
    command = f"frames --list {root}/videos.txt --root {root}/videos --output {output}"
    prepare([*command.split(), "--short_side", "16", "--workers", "1", *extra])


def test_frames_resume_skip_finished_and_retry_failures(videos, capsys):
    _frames(videos, videos / "reference")
    reference = _files(videos / "reference")
    failures = (videos / "reference" / "videos_failures.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in failures] == [
        str(videos / "videos" / "a" / "bad.mp4"),
        str(videos / "videos" / "a" / "gone.mp4"),
    ]
    assert failures[1].endswith("\tvideo file does not exist")
    assert "4 of 6 videos done (4 now, 0 before), 2 failed" in capsys.readouterr().out

    # The state a kill leaves: clip_2 half written, clip_3 not started, no frame list yet.
    output = videos / "frames"
    _frames(videos, output)
    os.remove(output / "videos.txt")
    shutil.rmtree(output / "a" / "clip_3")
    os.rename(output / "a" / "clip_2", output / "a" / "clip_2.partial")
    for name in sorted(os.listdir(output / "a" / "clip_2.partial"))[5:]:
        os.remove(output / "a" / "clip_2.partial" / name)
    kept = (output / "a" / "clip_0" / "img_00001.jpg").stat()
    capsys.readouterr()
    _frames(videos, output)
    assert "4 of 6 videos done (2 now, 2 before), 2 failed" in capsys.readouterr().out
    assert _files(output) == reference  # nothing half-written is left, the list is the same
    again = (output / "a" / "clip_0" / "img_00001.jpg").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)

    # A re-run retries the failures: the repaired video is extracted, the list gains it.
    shutil.copy(videos / "videos" / "a" / "clip_1.mp4", videos / "videos" / "a" / "bad.mp4")
    _frames(videos, output)
    assert "a/bad 20 1" in (output / "videos.txt").read_text().splitlines()
    assert (
        (output / "videos_failures.txt")
        .read_text()
        .startswith(str(videos / "videos" / "a" / "gone.mp4"))
    )
    _frames(videos, output, "--overwrite")
    again = (output / "a" / "clip_0" / "img_00001.jpg").stat()
    assert again.st_mtime_ns != kept.st_mtime_ns or again.st_ino != kept.st_ino


def _records(folder, split) -> list:
    reader = records.FrameRecordReader(str(folder), split)
    return [
        (*reader.video(i), [reader.frame(i, f) for f in range(reader.video(i)[2])])
        for i in range(len(reader))
    ]


def _arrayrecord(root, output, *extra):
    command = (
        f"arrayrecord --kind videos --list {root}/videos.txt --root {root}/videos "
        f"--output {output} --split train --num_shards 3 --workers 1"
    )
    prepare([*command.split(), *extra])


def test_arrayrecord_resume_keeps_finished_shards(videos, capsys, user_error):
    _arrayrecord(videos, videos / "reference")
    reference = _records(videos / "reference", "train")
    assert [video[0] for video in reference] == [f"a/clip_{i}.mp4" for i in range(4)]
    assert (videos / "reference" / "train_failures.txt").read_text().count("\n") == 2

    # Killed while writing shard 2 (list positions 2, 5): shard 0 (0, 3) is finished, shard 1
    # (1, 4: the corrupt and the missing video) too, but a re-run retries its failures.
    output = videos / "ar"
    _arrayrecord(videos, output)
    progress = output / "train.progress"
    shard0, shard1, shard2 = (
        os.path.basename(p) for p in records.shard_paths(str(output), "train")
    )
    os.remove(progress / f"{shard2}.msgpack")
    os.rename(output / shard2, progress / f"{shard2}.partial")
    os.remove(records.index_path(str(output), "train"))
    kept = (output / shard0).stat()
    capsys.readouterr()
    _arrayrecord(videos, output)
    assert "4 of 6 videos done (2 now, 2 before), 2 failed" in capsys.readouterr().out
    assert _records(output, "train") == reference
    for name in (shard0, shard1, shard2, "train.index.msgpack"):
        assert (output / name).read_bytes() == (videos / "reference" / name).read_bytes()
    again = (output / shard0).stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert not list(progress.glob("*.partial"))

    with user_error("other num_shards"):
        prepare(
            f"arrayrecord --kind videos --list {videos}/videos.txt --root {videos}/videos "
            f"--output {output} --split train --num_shards 2 --workers 1".split()
        )
    _arrayrecord(videos, output, "--overwrite")
    assert _records(output, "train") == reference


def test_frames_in_two_worker_processes_equal_one(videos, user_error):
    """The worker processes write the same folders, list and failures (about 10 s: spawning)."""
    _frames(videos, videos / "one")
    _frames(videos, videos / "two", "--workers", "2")
    assert _files(videos / "two") == _files(videos / "one")
    with user_error(r"other short_side \(short_side=16\)"):
        prepare(
            f"frames --list {videos}/videos.txt --root {videos}/videos --output {videos}/two "
            "--short_side 32 --workers 1".split()
        )


def test_full_disk_stops_with_how_to_resume(videos, monkeypatch, user_error):
    import errno

    from tea_jax.data import prepare as prepare_module

    def full(frame, quality):
        raise OSError(errno.ENOSPC, "No space left on device")

    _frames(videos, videos / "reference")
    monkeypatch.setattr(prepare_module.records, "encode_jpeg", full)
    with user_error(r"stopped at 0 of 6 videos done.*\nhint: .*run the same command again"):
        _frames(videos, videos / "frames")
    monkeypatch.undo()
    _frames(videos, videos / "frames")
    assert _files(videos / "frames") == _files(videos / "reference")
