"""Bad input under on_error='raise' (one clear error naming the file) and 'skip' (counted, logged,
replaced deterministically in training, masked out in evaluation, bounded by max_bad_fraction)."""

import logging
import os

import av
import cv2
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from tea_jax.data import DataError, ListFileError, create_loader, default_config, records
from tea_jax.data.listfiles import read_list
from tea_jax.data.video import write_video

NUM_GOOD = 6


def _jpeg(value):
    return cv2.imencode(".jpg", np.full((16, 16, 3), value, np.uint8))[1].tobytes()


def _frames(folder, count=4):
    os.makedirs(folder)
    for f in range(count):
        with open(os.path.join(folder, f"img_{f + 1:05d}.jpg"), "wb") as out:
            out.write(_jpeg(40 * f))


def _video(path, count=10):
    write_video(path, np.stack([np.full((32, 32, 3), 20 * f, np.uint8) for f in range(count)]))


def _zero_frame_video(path):
    with av.open(path, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()


def _truncated_video(path):
    frames = np.stack([np.full((32, 32, 3), 8 * f, np.uint8) for f in range(30)])
    with av.open(path, "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) * 2 // 3])


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


# case: (source, list line of the bad entry, text the error must contain)
CASES = {
    "missing_folder": ("frames", "nowhere 4 1", "frame folder does not exist"),
    "missing_frame": ("frames", "missing_frame 4 1", "img_00002.jpg: cannot read frame"),
    "corrupt_jpeg": ("frames", "corrupt_jpeg 4 1", "cannot decode image"),
    "truncated_jpeg": ("frames", "truncated_jpeg 4 1", "truncated JPEG"),
    "num_frames_too_large": ("frames", "good0 9 1", "list says 9 frames"),
    "missing_video": ("videos", "nowhere.mp4 1", "video file does not exist"),
    "unreadable_video": ("videos", "garbage.mp4 1", "cannot open video"),
    "truncated_video": ("videos", "truncated.mp4 1", "truncated"),
    "zero_frame_video": ("videos", "empty.avi 1", "zero frames"),
}
BAD_PATH = {
    "missing_frame": "missing_frame/img_00002.jpg",
    "corrupt_jpeg": "corrupt_jpeg/img_00003.jpg",
    "truncated_jpeg": "truncated_jpeg/img_00001.jpg",
    "num_frames_too_large": "good0",
}


@pytest.fixture(scope="module")
def data_bad_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad"))
    for i in range(NUM_GOOD):
        _frames(os.path.join(root, f"good{i}"))
        _video(os.path.join(root, f"good{i}.mp4"))
    _frames(os.path.join(root, "missing_frame"))
    os.remove(os.path.join(root, "missing_frame", "img_00002.jpg"))
    _frames(os.path.join(root, "corrupt_jpeg"))
    _write(os.path.join(root, "corrupt_jpeg", "img_00003.jpg"), b"\xff\xd8 not a jpeg \xff\xd9")
    _frames(os.path.join(root, "truncated_jpeg"))
    _write(os.path.join(root, "truncated_jpeg", "img_00001.jpg"), _jpeg(200)[:300])
    _write(os.path.join(root, "garbage.mp4"), b"garbage" * 100)
    _truncated_video(os.path.join(root, "truncated.mp4"))
    _zero_frame_video(os.path.join(root, "empty.avi"))
    return root


def _cfg(root, tmp_path, source, bad_line, **overrides):
    good = [f"good{i}{'.mp4' if source == 'videos' else ' 4'} {i % 3}" for i in range(NUM_GOOD)]
    lines = [*good[:3], bad_line, *good[3:]]
    list_path = tmp_path / "list.txt"
    list_path.write_text("\n".join(lines) + "\n")
    cfg = default_config()
    cfg.update(source=source, root=root, num_classes=3, num_workers=0, image_size=16)
    cfg.update(short_side=16, train_list=str(list_path), val_list=str(list_path), **overrides)
    return cfg


def _epoch(cfg, split):
    loader = create_loader(cfg, split, batch_size=2, num_segments=4, seed=0)
    iterator = iter(loader)
    return [next(iterator) for _ in range(loader.num_batches)]


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("case", CASES)
def test_raise_names_file_and_reason(data_bad_root, tmp_path, case, split):
    source, line, reason = CASES[case]
    cfg = _cfg(data_bad_root, tmp_path, source, line, on_error="raise")
    with pytest.raises(DataError, match=reason) as error:
        _epoch(cfg, split)
    expected = BAD_PATH.get(case, line.split()[0])
    assert error.value.path == os.path.join(data_bad_root, expected)


@pytest.mark.parametrize("case", CASES)
def test_skip_replaces_counts_and_logs(data_bad_root, tmp_path, case, caplog):
    source, line, reason = CASES[case]
    cfg = _cfg(data_bad_root, tmp_path, source, line, on_error="skip", max_bad_fraction=0.2)
    with caplog.at_level(logging.WARNING):
        train = _epoch(cfg, "train")
    assert sum(len(b["label"]) for b in train) == 6
    skips = [r.getMessage() for r in caplog.records if "skipped bad example" in r.getMessage()]
    assert len(skips) == 1 and reason in skips[0]
    np.testing.assert_array_equal(_epoch(cfg, "train")[2]["video"], train[2]["video"])

    val = _epoch(cfg, "val")
    mask = np.concatenate([b["mask"] for b in val])
    index = np.concatenate([b["index"] for b in val])
    assert list(index[~mask]) == [3, -1] and mask.sum() == NUM_GOOD


def test_skip_stops_above_max_bad_fraction(data_bad_root, tmp_path):
    cfg = _cfg(data_bad_root, tmp_path, "frames", "nowhere 4 1", on_error="skip")
    cfg.max_bad_fraction = 0.1  # 0.7 of the 7 examples: one bad one is too many
    with pytest.raises(DataError, match=r"more than max_bad_fraction=0\.1"):
        _epoch(cfg, "train")


def test_default_is_skip_for_training_and_raise_for_evaluation(data_bad_root, tmp_path):
    cfg = _cfg(data_bad_root, tmp_path, "frames", "nowhere 4 1", max_bad_fraction=0.2)
    _epoch(cfg, "train")
    with pytest.raises(DataError, match="nowhere"):
        _epoch(cfg, "val")


def test_worker_error_is_one_clean_message(data_bad_root, tmp_path, capfd):
    cfg = _cfg(data_bad_root, tmp_path, "frames", "corrupt_jpeg 4 1", num_workers=1)
    with pytest.raises(DataError, match=r"img_00003\.jpg: cannot decode image"):
        _epoch(cfg, "val")
    assert "Traceback" not in capfd.readouterr().err


LINE_CASES = {
    "wrong_field_count": ("good0 1", "expected 'path num_frames label', got 2 field"),
    "non_integer": ("good0 four 1", "expected integers"),
    "label_out_of_range": ("good0 4 3", r"label 3 outside \[0, 3\)"),
    "negative_label": ("good0 4 -1", r"label -1 outside"),
}


@pytest.mark.parametrize("case", LINE_CASES)
def test_list_line_errors(data_bad_root, tmp_path, case, caplog):
    line, reason = LINE_CASES[case]
    cfg = _cfg(data_bad_root, tmp_path, "frames", line, on_error="raise")
    with pytest.raises(ListFileError, match=reason) as error:
        create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)
    assert error.value.path == f"{cfg.train_list}:4"
    cfg.on_error, cfg.max_bad_fraction = "skip", 0.2
    with caplog.at_level(logging.WARNING):
        loader = create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)
    assert loader.num_examples == NUM_GOOD
    assert f"{cfg.train_list}:4" in caplog.text
    cfg.max_bad_fraction = 0.1
    with pytest.raises(ListFileError, match="1 of 7 lines are bad"):
        create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)


def test_video_list_lines(tmp_path):
    path = tmp_path / "videos.txt"
    path.write_text("# comment\n\na.mp4 2\nx.mp4 1 0\n")
    with pytest.raises(ListFileError, match=r"videos.txt:4: expected 'path label', got 3"):
        read_list(str(path), with_num_frames=False, root="/r")
    entries = read_list(
        str(path), with_num_frames=False, root="/r", on_error="skip", max_bad_fraction=0.5
    )
    assert [(e.path, e.label) for e in entries] == [("/r/a.mp4", 2)]


@pytest.fixture
def records_root(tmp_path):
    """A layout-2 ArrayRecord split of NUM_GOOD 4-frame videos in 2 shards."""
    with records.FrameRecordWriter(str(tmp_path), "val", 2) as writer:
        for i in range(NUM_GOOD):
            writer.write(f"v{i}", i % 3, [_jpeg(40 * f) for f in range(4)])
    meta = {"num_classes": 3, "splits": {"val": NUM_GOOD}, "layouts": {"val": 2}}
    records.write_meta(str(tmp_path), meta)
    return tmp_path


def _records_epoch(root):
    cfg = default_config()
    cfg.update(source="arrayrecord", root=str(root), num_workers=0, image_size=16, short_side=16)
    cfg.on_error = "raise"
    return _epoch(cfg, "val")


def _rewrite_shard(path, frames):
    os.remove(path)
    writer = ArrayRecordWriter(path, "group_size:1,uncompressed")
    for frame in frames:
        writer.write(frame)
    writer.close()


SHARD_0 = "val.array_record-00000-of-00002"


def test_records_read(records_root):
    assert sum(len(b["label"]) for b in _records_epoch(records_root)) == NUM_GOOD


def test_truncated_frame_record_names_shard_record(records_root):
    good = [_jpeg(40 * f) for f in range(4)]
    # Video 2 is the second video of shard 0: records 4-7; its frame 1 is record 5.
    frames = [*good, good[0], _jpeg(200)[:300], *good[2:], *good]
    _rewrite_shard(str(records_root / SHARD_0), frames)
    with pytest.raises(DataError, match="truncated JPEG") as error:
        _records_epoch(records_root)
    assert error.value.path == f"{records_root / SHARD_0} record 5"


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("fewer_records", r"shard holds 11 records, the index .*val\.index\.msgpack says 12"),
        ("truncated_shard", r"cannot open shard \(truncated or not an ArrayRecord file\)"),
        ("missing_shard", "shard file is missing"),
    ],
)
def test_damaged_shard_names_it(records_root, damage, reason):
    path = str(records_root / SHARD_0)
    if damage == "fewer_records":
        _rewrite_shard(path, [_jpeg(0)] * 11)
    elif damage == "truncated_shard":
        with open(path, "rb") as f:
            data = f.read()
        _write(path, data[: len(data) // 2])
    else:
        os.remove(path)
    with pytest.raises(DataError, match=reason) as error:
        _records_epoch(records_root)
    assert error.value.path == path


def test_missing_or_malformed_index(records_root):
    index = records_root / "val.index.msgpack"
    _write(str(index), b"\x93not an index")
    with pytest.raises(DataError, match="malformed index") as error:
        _records_epoch(records_root)
    assert error.value.path == str(index)
    os.remove(index)
    with pytest.raises(DataError, match="cannot read the split's index"):
        _records_epoch(records_root)
