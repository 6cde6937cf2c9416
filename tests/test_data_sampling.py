"""TSN sampling and augmentation rules, read back from frames whose pixels encode what they are.

Test frames are PNG (lossless): red = 100 * label + frame number, green = x, blue = y, so a clip
read through the whole pipeline tells exactly which video, frames and crop were taken.
"""

import os

import cv2
import numpy as np
import pytest

from tea_jax.data import create_loader, default_config, sampling, transforms


def write_coded_frames(folder, num_frames, width, height, first=0, template="img_{:05d}.png"):
    os.makedirs(folder, exist_ok=True)
    ys, xs = np.mgrid[:height, :width]
    for f in range(num_frames):
        rgb = np.stack([np.full_like(xs, first + f), xs, ys], -1).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, template.format(f + 1)), rgb[..., ::-1])


@pytest.fixture(scope="module")
def data_coded(tmp_path_factory):
    """Two landscape videos (50 and 5 frames, 120x80) and one portrait video (30 frames)."""
    root = str(tmp_path_factory.mktemp("coded"))
    videos = [("wide", 50, 120, 80, 0), ("short", 5, 120, 80, 1), ("tall", 30, 80, 120, 2)]
    with open(os.path.join(root, "list.txt"), "w") as f:
        for name, frames, width, height, label in videos:
            write_coded_frames(os.path.join(root, name), frames, width, height, 100 * label)
            f.write(f"{name} {frames} {label}\n")
    cfg = default_config()
    cfg.update(source="frames", root=root, template="img_{:05d}.png", num_classes=3, num_workers=0)
    cfg.train_list = cfg.val_list = "list.txt"
    return cfg


def test_train_indices_one_per_segment():
    rng = np.random.default_rng(0)
    draws = np.stack([sampling.train_indices(30, 8, rng) for _ in range(200)])
    segment = np.arange(8) * 3
    assert np.all((draws >= segment) & (draws < segment + 3))
    assert {tuple(np.unique(draws - segment))} == {(0, 1, 2)}
    assert len({tuple(d) for d in draws}) > 100  # segments draw independently


def test_train_indices_short_video_spreads_evenly():
    indices = sampling.train_indices(5, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(indices, [0, 0, 1, 1, 2, 3, 3, 4])


@pytest.mark.parametrize(("frames", "segments"), [(30, 8), (50, 16), (7, 8), (301, 8), (16, 16)])
def test_test_indices_centre_of_segments(frames, segments):
    expected = [int(frames / segments / 2 + frames / segments * k) for k in range(segments)]
    np.testing.assert_array_equal(sampling.test_indices(frames, segments)[0], expected)


def test_multi_clip_offsets():
    clips = sampling.test_indices(80, 8, num_clips=10)
    assert clips.shape == (10, 8)
    np.testing.assert_array_equal(clips[:, 0], np.arange(10))  # offset (c + 0.5) / 10 of 10
    np.testing.assert_array_equal(clips[:, 3], 30 + np.arange(10))


def test_dense_sampling():
    rng = np.random.default_rng(0)
    train = np.stack([sampling.train_indices(100, 8, rng, dense=True) for _ in range(50)])
    np.testing.assert_array_equal(np.diff(train, axis=1), np.full((50, 7), 8))
    assert train[:, 0].min() >= 0 and train[:, 0].max() <= 36
    test = sampling.test_indices(100, 8, num_clips=2, dense=True)
    np.testing.assert_array_equal(test[:, 0], [9, 27])
    np.testing.assert_array_equal(sampling.test_indices(10, 4, dense=True)[0], [0, 6, 2, 8])


def test_multiscale_crop_boxes():
    rng = np.random.default_rng(0)
    boxes = {transforms.multiscale_crop_box(rng, 340, 256, 224) for _ in range(3000)}
    sides = {(w, h) for _, _, w, h in boxes}
    # int(256 * s) = 256, 224, 192, 168; scale indices differ by at most 1.
    assert sides == {
        (256, 256), (224, 256), (256, 224), (224, 224), (192, 224),
        (224, 192), (192, 192), (168, 192), (192, 168), (168, 168),
    }  # fmt: skip
    for w, h in sides:
        step_x, step_y = (340 - w) // 4, (256 - h) // 4
        origins = {(x, y) for x, y, bw, bh in boxes if (bw, bh) == (w, h)}
        assert origins == {(i * step_x, j * step_y) for i, j in transforms.FIXED_OFFSETS}
    assert len(transforms.FIXED_OFFSETS) == len(set(transforms.FIXED_OFFSETS)) == 13


def test_multiscale_snaps_to_output_size():
    sides = {
        transforms.multiscale_crop_box(np.random.default_rng(i), 256, 256, 226)[2]
        for i in range(300)
    }
    assert sides == {256, 226, 192, 168}  # int(256 * .875) = 224 is within 3 of 226


def test_eval_boxes():
    assert transforms.center_crop_box(341, 256, 224) == (58, 16, 224, 224)
    assert transforms.three_crop_boxes(341, 256, 256) == [
        (0, 0, 256, 256),
        (42, 0, 256, 256),
        (84, 0, 256, 256),  # the released GroupFullResSample: 0, 2 and 4 steps of 85 // 4
    ]
    assert transforms.three_crop_boxes(256, 300, 256) == [
        (0, 0, 256, 256),
        (0, 22, 256, 256),
        (0, 44, 256, 256),
    ]
    assert transforms.scaled_size(320, 240, 256) == (341, 256) and transforms.scaled_size(
        240, 320, 256
    ) == (256, 341)


def test_train_clip_reads_sampled_frames_and_one_crop(data_coded):
    cfg = data_coded.copy_and_resolve_references()
    cfg.short_side, cfg.image_size, cfg.flip = None, 40, False
    loader = create_loader(cfg, "train", batch_size=3, num_segments=8, seed=0)
    iterator = iter(loader)
    crops = set()
    for _ in range(20):
        batch = next(iterator)
        for video, label in zip(batch["video"].astype(int), batch["label"], strict=True):
            frames = video[:, 20, 20, 0] - 100 * label
            assert np.all(video[..., 0] == video[:, :1, :1, 0])  # one frame per time step
            assert np.all(video[..., 1:] == video[:1, ..., 1:])  # same crop for every frame
            if label == 0:  # 50 frames: avg 6
                assert np.all((frames >= np.arange(8) * 6) & (frames < np.arange(8) * 6 + 6))
            if label == 1:
                np.testing.assert_array_equal(frames, [0, 0, 1, 1, 2, 3, 3, 4])
            x0, y0, x1, y1 = (
                video[0, 0, 0, 1],
                video[0, 0, 0, 2],
                video[0, -1, -1, 1],
                video[0, -1, -1, 2],
            )
            crops.add((label, x0, y0, x1 - x0, y1 - y0))
    # 80 short side: sides 80, 70, 60, 52 (indices differing by at most 1) on the 13-point grid.
    sides = (80, 70, 60, 52)
    wide = {c[1:] for c in crops if c[0] == 0}
    assert len(wide) >= 5
    for x0, y0, span_x, span_y in wide:
        i = min(range(4), key=lambda k: abs(sides[k] - 1 - span_x))
        j = min(range(4), key=lambda k: abs(sides[k] - 1 - span_y))
        # Shrinking averages up to a pixel inwards at either edge.
        assert abs(sides[i] - 1 - span_x) <= 2 and abs(sides[j] - 1 - span_y) <= 2
        assert abs(i - j) <= 1
        step_x, step_y = (120 - sides[i]) // 4, (80 - sides[j]) // 4
        assert any(
            abs(x0 - a * step_x) <= 1 and abs(y0 - b * step_y) <= 1
            for a, b in transforms.FIXED_OFFSETS
        )


def test_flip_mirrors_and_swaps_labels(data_coded):
    cfg = data_coded.copy_and_resolve_references()
    cfg.short_side, cfg.image_size, cfg.scales = None, 80, (1.0,)
    cfg.flip_label_pairs = ((0, 2),)
    iterator = iter(create_loader(cfg, "train", batch_size=3, num_segments=2, seed=0))
    flips = 0
    for _ in range(8):
        batch = next(iterator)
        for video, label in zip(batch["video"].astype(int), batch["label"], strict=True):
            flipped = video[0, 0, 0, 1] > video[0, 0, -1, 1]
            np.testing.assert_array_equal(np.abs(np.diff(video[0, 0, :, 1])), 1)
            flips += flipped
            source = video[0, 0, 0, 0] // 100
            assert label == ({0: 2, 2: 0}.get(source, source) if flipped else source)
    assert 4 <= flips <= 20


def test_eval_centre_crop_and_resize(data_coded):
    cfg = data_coded.copy_and_resolve_references()
    cfg.short_side, cfg.image_size = 80, 64
    batch = next(iter(create_loader(cfg, "val", batch_size=3, num_segments=4, seed=0)))
    wide, tall = batch["video"][0, 0].astype(int), batch["video"][2, 0].astype(int)
    np.testing.assert_array_equal(wide[:, 0, 0, 0], [6, 18, 31, 43])  # int(50/8 + 50/4 k)
    assert (wide[0, 0, 0, 1], wide[0, 0, 0, 2]) == (28, 8)  # (120 - 64) / 2, (80 - 64) / 2
    assert (tall[0, 0, 0, 1], tall[0, 0, 0, 2]) == (8, 28)


def test_eval_three_crops_and_rescale(data_coded):
    cfg = data_coded.copy_and_resolve_references()
    cfg.short_side, cfg.test_clips, cfg.test_crops = 40, 2, 3
    cfg.test_clip_sampling = "fixed"
    batch = next(iter(create_loader(cfg, "val", batch_size=3, num_segments=4, seed=0)))
    wide = batch["video"][0].astype(int)  # (6, 4, 40, 40, 3): 120x80 seen as 60x40
    assert wide.shape == (6, 4, 40, 40, 3)
    np.testing.assert_array_equal(wide[::3, :, 0, 0, 0], [[3, 15, 28, 40], [9, 21, 34, 46]])
    left, centre, right = (wide[k, 0, 20, :, 1] for k in range(3))
    assert abs(left[0] - 0) <= 1 and abs(centre[0] - 20) <= 2 and abs(right[-1] - 119) <= 1
    tall = batch["video"][2].astype(int)
    top, bottom = tall[0, 0, :, 20, 2], tall[2, 0, :, 20, 2]
    assert top[0] <= 1 and bottom[-1] >= 118


def test_shrinking_does_not_alias():
    """A 720p frame of 1-3 pixel stripes, centre-cropped at short side 256: the crop equals the
    crop of PIL's bilinear resize of the whole frame (the released GroupScale), which smooths the
    stripes away; a bilinear resize of the crop alone aliases them into bands."""
    from PIL import Image

    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[..., 0] = 255 * (np.arange(1280) % 3 == 0)
    frame[..., 1] = 255 * (np.arange(720)[:, None] % 2)
    frame[..., 2] = 255 * ((np.arange(1280) // 2 + np.arange(720)[:, None]) % 2)
    width, height = transforms.scaled_size(1280, 720, 256)
    x, y, w, h = transforms.center_crop_box(width, height, 224)
    whole = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    expected = whole[y : y + h, x : x + w].astype(int)
    ours = transforms.crop_resize(frame[None], (x, y, w, h), 256, 224)[0].astype(int)
    assert np.abs(ours - expected).mean() < 1.5 and np.abs(ours - expected).max() <= 8
    scale = 1280 / width
    crop = frame[
        round(y * scale) : round((y + h) * scale), round(x * scale) : round((x + w) * scale)
    ]
    aliased = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(aliased - expected).mean() > 30


def test_random_test_clips_are_seeded_training_clips():
    a = sampling.test_indices(80, 8, 10, rng=np.random.default_rng([3, 5]))
    b = sampling.test_indices(80, 8, 10, rng=np.random.default_rng([3, 5]))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (10, 8) and len({tuple(c) for c in a}) > 5
    segments = np.arange(8) * 10
    assert np.all((a >= segments) & (a < segments + 10))  # one frame in each segment


def test_accuracy_protocol_random_clips_depend_on_seed_and_video_only(data_coded):
    """Random test clips are drawn from the run's seed and the video's index: the same in every
    run and on every host, different for another seed."""

    def frame_numbers(seed, shard_count=1, shard_index=0):
        cfg = data_coded.copy_and_resolve_references()
        cfg.short_side, cfg.image_size, cfg.test_clips, cfg.test_crops = 40, 32, 4, 1
        loader = create_loader(
            cfg, "val", batch_size=3, num_segments=4, seed=seed,
            shard_count=shard_count, shard_index=shard_index,
        )  # fmt: skip
        batch = next(iter(loader))
        videos = batch["video"][..., 0, 0, 0].astype(int) - 100 * batch["label"][:, None, None]
        return {
            int(i): v.tolist()
            for i, v, m in zip(batch["index"], videos, batch["mask"], strict=True)
            if m
        }

    first = frame_numbers(seed=0)
    assert frame_numbers(seed=0) == first
    second_host = frame_numbers(seed=0, shard_count=2, shard_index=1)
    assert second_host == {i: first[i] for i in second_host} and len(second_host) == 1
    assert frame_numbers(seed=1) != first
    wide = np.array(first[0])  # 50 frames: four clips, one frame in each segment of 12
    assert len({tuple(c) for c in wide}) > 1
    assert np.all((wide >= np.arange(4) * 12) & (wide < np.arange(4) * 12 + 12))
