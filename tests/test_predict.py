"""Prediction reads a video exactly as evaluation does: whole videos, windows of a long video,
and lists of videos."""

import csv
import json
import pathlib
import signal
import subprocess
import sys
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic_model import OPTIONS as SYNTHETIC_OPTIONS

import tea_jax
from configs import default as default_lib
from tea_jax import long_video, model_files, predict
from tea_jax.data import default_config, synthetic, synthetic_long
from tea_jax.data.pipeline import create_loader
from tea_jax.data.video import VideoFile, write_video
from tea_jax.data.windows import sliding_windows, window_clips
from tea_jax.errors import UserError
from tea_jax.inference import PREPROCESS_FILE
from tea_jax.predictor import Predictor, softmax
from tea_jax.train import evaluation, sharding


def test_prediction_views_equal_the_evaluation_loaders(tmp_path):
    options = {"num_classes": 3, "num_segments": 4, "stage_sizes": (1, 1, 1, 1)}
    options["width_multiplier"] = 0.25
    model = tea_jax.create_model("tea50", **options)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4, 32, 32, 3)))
    model_dir = tmp_path / "model"
    model_files.save_model(model_dir, "tea50", options, variables)
    (model_dir / PREPROCESS_FILE).write_text(json.dumps({"image_size": 32, "short_side": 36}))

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"video{i}.mp4")
        write_video(str(paths[-1]), rng.integers(0, 256, (20 + 7 * i, 48, 64, 3), dtype=np.uint8))
    (tmp_path / "val.txt").write_text("".join(f"{p.name} {i}\n" for i, p in enumerate(paths)))

    cfg = default_config()
    cfg.source, cfg.root, cfg.val_list, cfg.num_classes = "videos", str(tmp_path), "val.txt", 3
    cfg.image_size, cfg.short_side, cfg.num_workers = 32, 36, 0
    cfg.test_clips, cfg.test_crops = 3, 1
    loader = create_loader(cfg, "val", batch_size=2, num_segments=4, seed=5, shard_count=1)
    batch = next(iter(loader))
    predictor = Predictor(str(model_dir), num_clips=3, seed=5)
    views = predictor.views(str(paths[0]))
    assert views.shape == (3, 4, 32, 32, 3)
    # The random clips are drawn from the seed and the video's index: a single file is index 0.
    np.testing.assert_array_equal(views, batch["video"][0])
    assert not np.array_equal(views[0], views[1])


# Windows over a long video, and many videos: the numbers of evaluation's efficient protocol.

ROOT = pathlib.Path(__file__).resolve().parents[1]
T, SIZE, SHORT = 4, 32, 36
FPS = 12


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained reduced TEA of 3 classes and 4 frames, saved with its preprocessing."""
    options = {"num_classes": 3, "num_segments": T, "stage_sizes": (1, 1, 1, 1)}
    options["width_multiplier"] = 0.25
    model = tea_jax.create_model("tea50", **options)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, T, SIZE, SIZE, 3)))
    directory = tmp_path_factory.mktemp("model") / "model"
    model_files.save_model(directory, "tea50", options, variables)
    preprocess = {"image_size": SIZE, "short_side": SHORT}
    (directory / PREPROCESS_FILE).write_text(json.dumps(preprocess))
    return directory


def _smooth_frames(count, seed=0):
    """uint8 (count, 48, 64, 3): a smooth random image drifting right, so that clips differ."""
    cells = np.random.default_rng(seed).integers(0, 256, (6, 12, 3), dtype=np.uint8)
    base = cv2.resize(cells, (96, 48), interpolation=cv2.INTER_LINEAR)
    return np.stack([base[:, i % 32 : i % 32 + 64] for i in range(count)])


def test_a_window_is_scored_as_evaluation_scores_the_clip_cut_to_it(model_dir, tmp_path):
    frames = _smooth_frames(26)
    write_video(str(tmp_path / "long.mp4"), frames, fps=FPS)
    out = tmp_path / "windows.jsonl"
    predict.main(
        [
            "--checkpoint", str(model_dir), str(tmp_path / "long.mp4"), "--window", "1.0",
            "--stride", "0.5", "--batch", "2", "--scores", "--output", str(out),
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    windows = sliding_windows(26, FPS, 1.0, 0.5)
    assert [(r["start"], r["end"]) for r in records] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    assert [r["window"] for r in records] == list(range(len(windows))) == [0, 1, 2]

    # The same windows as videos of their own, scored by evaluation's loader and step.
    lines = []
    for w, (start, end) in enumerate(zip(windows.starts, windows.ends, strict=True)):
        write_video(str(tmp_path / f"window{w}.mp4"), frames[start:end], fps=FPS)
        lines.append(f"window{w}.mp4 0\n")
    (tmp_path / "windows.txt").write_text("".join(lines))
    cfg = default_config()
    cfg.source, cfg.root, cfg.val_list, cfg.num_classes = "videos", str(tmp_path), "windows.txt", 3
    cfg.image_size, cfg.short_side, cfg.num_workers = SIZE, SHORT, 0
    loader = create_loader(
        cfg, "val", batch_size=2, num_segments=T, seed=0, protocol="efficient", shard_count=1
    )
    predictor = Predictor(str(model_dir), batch_size=2)
    mesh = sharding.create_mesh()
    eval_fn = evaluation.make_eval_fn(predictor.model, mesh)
    variables = sharding.replicate(predictor.variables, mesh)
    logits, _, _ = evaluation.predict_split(eval_fn, variables, loader, mesh)
    expected = softmax(logits)
    got = np.array([r["probabilities"] for r in records])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert not np.allclose(expected[0], expected[1], atol=1e-4)  # the windows do differ

    # The clips themselves are the evaluation views, pixel for pixel.
    indices = windows.clip_indices(T)
    with VideoFile(str(tmp_path / "long.mp4")) as video:
        batches = list(
            window_clips(video, indices, short_side=SHORT, image_size=SIZE, batch_size=2)
        )
    assert [b[0].tolist() for b in batches] == [[0, 1], [2]]
    clips = np.concatenate([b[1] for b in batches])
    reader = predictor.reader([str(tmp_path / f"window{w}.mp4") for w in range(3)])
    for w in range(3):
        np.testing.assert_array_equal(clips[w], reader.load(w)[0][0])


def test_windows_keep_only_the_frames_still_needed():
    indices = sliding_windows(600, FPS, 2.0, 1.0).clip_indices(8)
    decoded = []

    class Frames:
        def stream(self, wanted):
            for i in range(600):
                if wanted(i):
                    decoded.append(i)
                    yield i, np.full((8, 8, 3), i % 256, np.uint8)

    batches = window_clips(Frames(), indices, short_side=None, image_size=8, batch_size=3)
    for numbers, clips in batches:
        for number, clip in zip(numbers, clips, strict=True):
            assert clip[:, 0, 0, 0].tolist() == [i % 256 for i in indices[number]]
    # Each frame a window needs is decoded once, however many windows share it.
    assert decoded == sorted(set(indices.ravel().tolist()))
    assert len(indices) == 49


def test_windows_timeline_and_labelled_video_by_the_command(model_dir, tmp_path):
    frames = _smooth_frames(50, seed=1)
    write_video(str(tmp_path / "long.mp4"), frames, fps=FPS)
    out, png, mp4 = tmp_path / "w.jsonl", tmp_path / "timeline.png", tmp_path / "labelled.mp4"
    predict.main(
        [
            "--checkpoint", str(model_dir), str(tmp_path / "long.mp4"), "--window", "1",
            "--stride", "0.25", "--smooth", "3", "--output", str(out), "--timeline", str(png),
            "--mp4", str(mp4), "--top-k", "2",
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 13 and all(len(r["top"]) == len(r["smoothed_top"]) == 2 for r in records)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with VideoFile(str(mp4)) as video:
        assert video.num_frames == 50 and video.frame_rate == FPS
        labelled = np.stack(list(video))
    with VideoFile(str(tmp_path / "long.mp4")) as video:
        frames = np.stack(list(video))
    # The label band (top left) is drawn on every frame; the rest of the frame is the source.
    band = np.abs(labelled[:, :6, :20].astype(int) - frames[:, :6, :20]).mean(axis=(1, 2, 3))
    assert (band > 30).all()
    rest = np.abs(labelled[:, 30:].astype(int) - frames[:, 30:]).mean()
    assert rest < 3


def test_every_frame_takes_the_label_of_the_nearest_window_centre():
    windows = sliding_windows(20, 10, 0.8, 0.4)  # windows [0, 8), [4, 12), [8, 16), [12, 20)
    nearest = long_video.nearest_windows(windows)
    # Centres at frames 3.5, 7.5, 11.5, 15.5.
    assert nearest.tolist() == [0] * 6 + [1] * 4 + [2] * 4 + [3] * 6


def test_smoothing_is_a_centred_moving_average_with_fewer_windows_at_the_ends():
    values = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    smoothed = long_video.moving_average(values, 3)
    np.testing.assert_allclose(smoothed[:, 0], [1 / 2, 1 / 3, 1 / 3, 1 / 2])
    np.testing.assert_allclose(smoothed.sum(axis=1), 1)
    assert long_video.moving_average(values, 1) is values


def test_many_videos_equal_evaluation_predictions_failures_listed_and_resumed(
    model_dir, tmp_path, capsys
):
    names = []
    for i in range(5):
        names.append(f"video{i}.mp4")
        write_video(str(tmp_path / names[-1]), _smooth_frames(14 + 3 * i, seed=i), fps=FPS)
    (tmp_path / "val.txt").write_text("".join(f"{n} {i % 3}\n" for i, n in enumerate(names)))

    # eval.py's efficient protocol on the same list.
    config = default_lib.get_config()
    config.data = default_config()
    config.data.update(source="videos", root=str(tmp_path), val_list="val.txt", num_classes=3)
    config.data.update(image_size=SIZE, short_side=SHORT, num_workers=0)
    config.eval_batch_size, config.num_segments = 2, T
    evaluation.run_evaluation(
        config, str(tmp_path / "eval"), protocols=["efficient"], checkpoint=str(model_dir)
    )
    eval_lines = (tmp_path / "eval" / "predictions_efficient.jsonl").read_text().splitlines()
    expected = {names[int(r["video"])]: r for r in map(json.loads, eval_lines)}

    # The same list plus a broken file, in worker processes.
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "all.txt").write_text((tmp_path / "val.txt").read_text() + "broken.mp4 0\n")
    out = tmp_path / "predictions.jsonl"
    command = ["--checkpoint", str(model_dir), "--list", str(tmp_path / "all.txt")]
    command += ["--root", str(tmp_path), "--output", str(out), "--batch", "2", "--scores"]
    with pytest.raises(SystemExit, match="1 of 6 videos could not be read"):
        predict.main([*command, "--workers", "1"])
    assert "broken.mp4: cannot open video" in capsys.readouterr().err
    records = {r["video"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "cannot open video" in records.pop(str(tmp_path / "broken.mp4"))["error"]
    for name, want in expected.items():
        got = records[str(tmp_path / name)]
        top = [t["index"] for t in got["top"]]
        assert top == [int(c) for c in want["top5"]]
        # eval.py writes logits: they differ from log-probabilities by one constant per video.
        offsets = np.array(want["scores"]) - np.log(np.array(got["probabilities"])[top])
        np.testing.assert_allclose(offsets, offsets[0], atol=1e-4)

    # A re-run skips the videos with a result and tries the failed one again.
    (tmp_path / "broken.mp4").write_bytes((tmp_path / names[0]).read_bytes())
    with out.open("a") as f:
        f.write('{"video": "cut sh')  # a line cut short by a killed run
    predict.main([*command, "--workers", "0"])
    assert "1 videos scored, 5 already in" in capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 and all("top" in r for r in lines)


def test_many_videos_as_csv_from_a_folder(model_dir, tmp_path):
    (tmp_path / "videos" / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.mp4", "sub/b.mp4"]):
        write_video(str(tmp_path / "videos" / name), _smooth_frames(12, seed=i), fps=FPS)
    out = tmp_path / "predictions.csv"
    predict.main(
        ["--checkpoint", str(model_dir), str(tmp_path / "videos"), "--output", str(out),
         "--top-k", "2", "--workers", "0"]
    )  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert [r["video"] for r in rows] == [
        str(tmp_path / "videos" / n) for n in ["a.mp4", "sub/b.mp4"]
    ]
    assert all(r["error"] == "" and float(r["prob_1"]) >= float(r["prob_2"]) for r in rows)


@pytest.mark.slow
def test_timeline_of_concatenated_synthetic_videos_changes_at_their_boundaries(trained, tmp_path):
    """A long video of synthetic validation videos of different classes, end to end through the
    documented command with the briefly trained TEA of `synthetic_model` (its 200 training steps
    take most of this test's 4 to 9 minutes on the shared 2-core machine: 203 s of 231 s in the
    last run). Measured: 86.0% of the 43 windows inside a segment have its class on top, and every
    change of the top class is within a window's length of a boundary."""
    variables = trained[1]
    model_dir = tmp_path / "model"
    options = {"num_classes": 8, "num_segments": 8, **SYNTHETIC_OPTIONS}
    model_files.save_model(model_dir, "tea50", options, variables)
    (model_dir / PREPROCESS_FILE).write_text(json.dumps({"image_size": 64, "short_side": 64}))
    (model_dir / "classes.txt").write_text("\n".join(synthetic.CLASSES) + "\n")

    segments = synthetic_long.write_long_video(str(tmp_path / "long.mp4"), 6, first=2)
    labels = [s["label"] for s in segments]
    bounds = np.array([0] + [s["end"] for s in segments])  # seconds

    out, png, mp4 = tmp_path / "w.jsonl", tmp_path / "timeline.png", tmp_path / "labelled.mp4"
    window = 1.5
    predict.main(
        [
            "--checkpoint", str(model_dir), str(tmp_path / "long.mp4"), "--window", str(window),
            "--stride", "0.25", "--output", str(out), "--timeline", str(png), "--mp4", str(mp4),
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    top = np.array([r["top"][0]["index"] for r in records])
    assert [r["top"][0]["class"] for r in records] == [synthetic.CLASSES[c] for c in top]
    starts, ends = (np.array([r[k] for r in records]) for k in ("start", "end"))
    # Windows inside one video: mostly that video's class.
    segment = np.searchsorted(bounds, starts, side="right") - 1
    inside = ends <= bounds[segment + 1] + 1e-6
    correct = top[inside] == np.array(labels)[segment[inside]]
    print(f"{correct.mean():.1%} of {inside.sum()} windows inside a segment correct")
    assert correct.mean() >= 0.8, (correct.mean(), top, labels)
    # The top class changes within a window's length of every boundary, and only there.
    centres = (starts + ends) / 2
    changes = (centres[1:] + centres[:-1])[top[1:] != top[:-1]] / 2
    print(f"top class changes at {np.round(changes, 2)} s, boundaries {np.round(bounds, 2)} s")
    for boundary in bounds[1:-1]:
        assert np.abs(changes - boundary).min() <= window, (boundary, changes)
    for change in changes:
        assert np.abs(bounds[1:-1] - change).min() <= window, (change, bounds)
    assert png.stat().st_size > 10_000
    with VideoFile(str(mp4)) as video:
        assert video.num_frames == round(bounds[-1] * synthetic_long.FPS)


def test_the_long_synthetic_video_records_where_each_class_is():
    frames, segments = synthetic_long.long_video(8, per_segment=2)
    assert len(frames) == round(segments[-1]["end"] * synthetic_long.FPS)
    assert [s["start"] for s in segments[1:]] == [s["end"] for s in segments[:-1]]
    assert [s["label"] for s in segments] == [0, 2, 4, 6, 1, 3, 5, 7]
    # Segment 5 (class 3, bottom to top): validation videos 9 and 13 (pair 1) reversed.
    options = synthetic.SyntheticOptions()
    videos = [synthetic.generate_pair(options, "val", i)[1][::-1] for i in (9, 13)]
    start, end = (round(segments[5][k] * synthetic_long.FPS) for k in ("start", "end"))
    np.testing.assert_array_equal(frames[start:end], np.concatenate(videos))


def test_settings_a_user_can_fix_are_named(model_dir, tmp_path, user_error):
    with pytest.raises(UserError, match="must be positive"):
        sliding_windows(100, FPS, 2.0, 0)
    with user_error("many videos need --output.*\nhint: add --output predictions.jsonl"):
        predict.main(["--checkpoint", str(model_dir), "--list", str(tmp_path / "videos.txt")])
    with user_error("--window scores one video file"):
        predict.main(["--checkpoint", str(model_dir), "a.mp4", "b.mp4", "--window", "2"])
    with user_error("video file does not exist"):
        predict.main(["--checkpoint", str(model_dir), str(tmp_path / "no.mp4"), "--window", "2"])


@pytest.mark.slow
def test_prediction_benchmark_ends_with_its_json_line(model_dir):
    """bench/predict_throughput.py on tiny videos with the untrained model (about a minute: two
    scoring processes and a list run with a worker process)."""
    command = [sys.executable, str(ROOT / "bench" / "predict_throughput.py")]
    command += ["--checkpoint", str(model_dir), "--minutes", "0.05", "0.1", "--size", "64x48"]
    command += ["--fps", "12", "--window", "1", "--stride", "0.5", "--videos", "3"]
    command += ["--clip-seconds", "1", "--workers", "1", "--batch", "2"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [row["windows"] for row in summary["long"]] == [5, 11]  # 36 and 72 frames
    for row in summary["long"]:
        assert row["peak_rss_mb"] > 0 and row["frames_decoded_per_s"] > 0
    assert summary["many"]["videos"] == 3 and summary["many"]["list_videos_per_s"] > 0


@pytest.mark.slow
def test_an_interrupted_list_run_says_how_to_resume_and_resumes(model_dir, tmp_path):
    """Ctrl-C in the middle of a list run, then the same command (about a minute: two runs)."""
    names = []
    for i in range(40):
        names.append(f"v{i}.mp4")
        write_video(str(tmp_path / names[-1]), _smooth_frames(24, seed=i), fps=FPS)
    (tmp_path / "list.txt").write_text("".join(f"{n}\n" for n in names))
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "tea_jax.predict", "--checkpoint", str(model_dir)]
    command += ["--list", str(tmp_path / "list.txt"), "--root", str(tmp_path)]
    command += ["--output", str(out), "--batch", "1", "--workers", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out.exists() and out.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"the results so far are in {out}; the same command resumes" in err
    done = len(out.read_text().splitlines())
    assert 2 <= done < 40
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{40 - done} videos scored, {done} already in" in rerun.stderr
    videos = [json.loads(line)["video"] for line in out.read_text().splitlines()]
    assert sorted(videos) == sorted(str(tmp_path / n) for n in names)
