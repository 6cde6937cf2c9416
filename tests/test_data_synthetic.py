"""Synthetic motion dataset: files, time-reversal pairing, determinism, motion direction."""

import dataclasses
import json
import os

import numpy as np
import pytest

from tea_jax.data import synthetic
from tea_jax.data.video import VideoFile

OPTIONS = synthetic.SyntheticOptions(seed=3, num_train=16, num_val=8)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic") / "data")
    synthetic.generate(root, OPTIONS, workers=1)
    return root


def _read_all(path):
    with VideoFile(path) as video:
        return video.read(range(video.num_frames))


def _centroid(frames):
    """Brightness-weighted centre (x, y) of the bright object in each frame."""
    weight = (frames.mean(-1) > 150).astype(float)
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    total = weight.sum((1, 2))
    return np.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], 1)


def test_files_and_lists(data_root):
    with open(os.path.join(data_root, "train.txt")) as f:
        lines = [line.split() for line in f]
    assert len(lines) == 16
    assert sorted(int(label) for _, label in lines) == sorted(list(range(8)) * 2)
    for path, _ in lines:
        assert os.path.getsize(os.path.join(data_root, path)) > 0
    with open(os.path.join(data_root, "classes.txt")) as f:
        assert f.read().splitlines() == list(synthetic.CLASSES)
    with open(os.path.join(data_root, "meta.json")) as f:
        assert json.load(f)["seed"] == 3


def test_class_b_is_exact_reversal_after_encoding(data_root):
    for index in range(4):
        a = _read_all(os.path.join(data_root, "val", f"{index:05d}_a.mp4"))
        b = _read_all(os.path.join(data_root, "val", f"{index:05d}_b.mp4"))
        assert OPTIONS.min_frames <= len(a) <= OPTIONS.max_frames
        np.testing.assert_array_equal(a, b[::-1])


def test_encoding_is_close_to_rendering(data_root):
    pair, rendered = synthetic.generate_pair(OPTIONS, "train", 1)
    decoded = _read_all(os.path.join(data_root, "train", "00001_a.mp4"))
    assert pair == 1
    assert np.abs(decoded.astype(int) - rendered).mean() < 3


def test_deterministic_from_seed():
    _, a = synthetic.generate_pair(OPTIONS, "train", 5)
    _, b = synthetic.generate_pair(OPTIONS, "train", 5)
    _, c = synthetic.generate_pair(synthetic.SyntheticOptions(seed=4), "train", 5)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or np.any(a != c)


@pytest.mark.parametrize("index", range(4))
def test_motion_of_class_a(index):
    pair, frames = synthetic.generate_pair(OPTIONS, "train", index)
    centre = _centroid(frames)
    area = (frames.mean(-1) > 150).sum((1, 2))
    steps = np.diff(centre, axis=0)
    if pair == 0:
        assert np.all(steps[:, 0] > 1.5) and np.all(np.abs(steps[:, 1]) < 0.5)
    elif pair == 1:
        assert np.all(steps[:, 1] > 1.5) and np.all(np.abs(steps[:, 0]) < 0.5)
    elif pair == 3:
        assert np.all(np.diff(area) > 0)
    else:
        assert np.abs(area[-1] / area[0] - 1) < 0.2
        assert _turn(frames) > 0.1 and _turn(frames[::-1]) < -0.1  # clockwise on screen
        radii = np.linalg.norm(_centroid(frames) - _centroid(frames).mean(0), axis=1)
        assert radii.min() > 5


def _turn(frames):
    """Median step (rad, clockwise on screen positive) of the object around its mean position."""
    offsets = _centroid(frames) - _centroid(frames).mean(0)
    return np.median(np.diff(np.unwrap(np.arctan2(offsets[:, 1], offsets[:, 0]))))


def test_ensure_reuses_or_replaces(tmp_path):
    root = str(tmp_path / "data")
    small = synthetic.SyntheticOptions(num_train=8, num_val=8, min_frames=4, max_frames=4)
    synthetic.ensure(root, small, workers=1)
    mtime = os.path.getmtime(os.path.join(root, "meta.json"))
    assert synthetic.ensure(root, small) == root
    assert os.path.getmtime(os.path.join(root, "meta.json")) == mtime
    other = synthetic.SyntheticOptions(seed=4, num_train=16, num_val=8, min_frames=4, max_frames=4)
    synthetic.ensure(root, other, workers=1)
    with open(os.path.join(root, "train.txt")) as f:
        assert len(f.readlines()) == 16
    assert os.listdir(tmp_path) == ["data"]


def test_ensure_leaves_other_folders_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="no synthetic dataset"):
        synthetic.ensure(str(tmp_path), OPTIONS)
    assert os.listdir(tmp_path) == ["mine.txt"]


def test_cli(tmp_path):
    out = str(tmp_path / "cli")
    synthetic.main(["--output", out, "--num_train", "8", "--num_val", "8", "--workers", "1"])
    with open(os.path.join(out, "val.txt")) as f:
        assert len(f.readlines()) == 8


CLUTTER = synthetic.SyntheticOptions(task="clutter", seed=3, num_train=16, num_val=8, size=32)
ORDER = synthetic.SyntheticOptions(task="order", seed=3, num_train=8, num_val=4, size=16)


@pytest.mark.parametrize("options", [CLUTTER, ORDER], ids=["clutter", "order"])
def test_task_files_pairs_and_determinism(tmp_path, options):
    """Every video is a deterministic function of the seed, and each video of the second class of
    a pair holds exactly the frames of one of the first class, in reverse order."""
    root = str(tmp_path / options.task)
    synthetic.generate(root, options, workers=1)
    classes, _ = synthetic.TASKS[options.task]
    with open(os.path.join(root, "classes.txt")) as f:
        assert f.read().splitlines() == list(classes)
    with open(os.path.join(root, "train.txt")) as f:
        labels = [int(line.split()[1]) for line in f]
    counts = np.bincount(labels, minlength=len(classes))
    assert len(counts) == len(classes) and np.all(counts == options.num_train // len(classes))
    for index in range(2):
        a = _read_all(os.path.join(root, "val", f"{index:05d}_a.mp4"))
        b = _read_all(os.path.join(root, "val", f"{index:05d}_b.mp4"))
        np.testing.assert_array_equal(a, b[::-1])
        # Per-frame statistics cannot tell the pair apart: the same multiset of frames.
        np.testing.assert_array_equal(np.sort(a.mean((1, 2, 3))), np.sort(b.mean((1, 2, 3))))
    _, first = synthetic.generate_pair(options, "train", 5)
    _, again = synthetic.generate_pair(options, "train", 5)
    _, other = synthetic.generate_pair(dataclasses.replace(options, seed=4), "train", 5)
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or np.any(first != other)


@pytest.mark.parametrize("index", range(12))
def test_clutter_object_moves_against_a_shaking_background(index):
    pair = index % 4
    rng = np.random.default_rng(index)
    camera, centres, radius = synthetic._clutter_motion(pair, rng, 32)
    assert synthetic.CLUTTER_FRAMES[0] <= len(camera) <= synthetic.CLUTTER_FRAMES[1]
    # Relative to the background the object moves at a constant speed in the class's direction.
    steps = np.diff(centres + camera, axis=0)
    direction = np.asarray(list(synthetic._CLUTTER_DIRECTIONS.values())[2 * pair], float)
    speed = steps @ direction / np.linalg.norm(direction)
    np.testing.assert_allclose(speed, speed[0], atol=1e-9)
    assert synthetic.CLUTTER_OBJECT_SPEED[0] <= speed[0] <= synthetic.CLUTTER_OBJECT_SPEED[1]
    np.testing.assert_allclose(np.cross(steps, direction), 0, atol=1e-9)
    # On screen, the shake moves it about as much as its own motion does.
    shake = np.abs(np.diff(camera, axis=0)).max()
    assert shake > 0.5 * speed[0]
    assert np.all(centres - radius >= 1) and np.all(centres + radius <= 31)


def test_clutter_background_shakes():
    _, frames = synthetic.generate_pair(CLUTTER, "train", 0)
    corner = frames[:, :8, :8].astype(float)
    assert np.abs(np.diff(corner, axis=0)).mean() > 3


def test_order_events():
    gaps = []
    for seed in range(200):
        first, second = synthetic._order_events(np.random.default_rng(seed))
        gaps.append(second - first)
        assert first >= synthetic.ORDER_MARGIN
        end = second + synthetic.ORDER_EVENT_FRAMES
        assert synthetic.ORDER_FRAMES - end >= synthetic.ORDER_MARGIN
    adjacent = np.equal(gaps, synthetic.ORDER_EVENT_FRAMES)
    assert 0.4 < adjacent.mean() < 0.6
    apart = np.asarray(gaps)[~adjacent]
    assert set(apart) == set(range(synthetic.ORDER_GAP[0], synthetic.ORDER_GAP[1] + 1))


@pytest.mark.parametrize("index", range(4))
def test_order_video_brightens_then_darkens(index):
    _, frames = synthetic.generate_pair(ORDER, "train", index)
    assert len(frames) == synthetic.ORDER_FRAMES
    brightness = frames.astype(float).mean((1, 2, 3))
    still = np.median(brightness)
    brighter = np.flatnonzero(brightness > still + 5)
    darker = np.flatnonzero(brightness < still - 5)
    assert len(brighter) == len(darker) == synthetic.ORDER_EVENT_FRAMES
    assert np.all(np.diff(brighter) == 1) and np.all(np.diff(darker) == 1)
    assert brighter[-1] < darker[0]
    # Every other frame is the same still image.
    still_frames = np.delete(frames, np.concatenate([brighter, darker]), axis=0)
    assert np.all(still_frames == still_frames[0])


def test_a_changed_task_parameter_regenerates_the_dataset(monkeypatch):
    before = synthetic._meta(CLUTTER)
    monkeypatch.setattr(synthetic, "CLUTTER_SHAKE", synthetic.CLUTTER_SHAKE / 2)
    assert synthetic._meta(CLUTTER) != before
