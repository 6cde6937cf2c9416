"""`tea_jax.visualize` on a briefly trained reduced TEA: the heat map finds the synthetic shape.

The network of `configs/synthetic_tea8.py` is trained in memory on clips rendered by the
synthetic generator (no video files, no input pipeline) for 200 steps, 40% of the main command's
budget. Its Grad-CAM peak then overlaps the shape in 72.7% of the validation frames here (chance,
a random cell of the 2x2 grid: 53.7%); after 60 steps it was at chance (46.4%), and the model of the
main command reaches 80.7% (docs/inference.md).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fast_compile import OPTIMIZED

import tea_jax
from bench.heatmap_hit_rate import chance_hits, object_boxes
from tea_jax import model_files, visualize
from tea_jax.data import normalize, sampling, synthetic
from tea_jax.data.video import VideoFile, write_video

T = 8
SIZE = 64
STEPS = 200
TRAIN_VIDEOS = 400
BATCH = 16
OPTIONS = {"stage_sizes": (1, 1, 1, 1), "width_multiplier": 0.25, "dropout_rate": 0.0}


def _clips(split, count):
    """`count` base videos of `split` and their reversals: uint8 (2 count, T, 64, 64, 3), labels."""
    clips, labels = [], []
    for index in range(count):
        pair, frames = synthetic.generate_pair(synthetic.SyntheticOptions(), split, index)
        for reverse in (False, True):
            video = frames[::-1] if reverse else frames
            clips.append(video[sampling.test_indices(len(video), T)[0]])
            labels.append(2 * pair + reverse)
    return np.stack(clips), np.asarray(labels)


@pytest.fixture(scope="module")
def untrained():
    """(model, variables, val clips, val labels) at initialisation: no training needed."""
    model = tea_jax.create_model("tea50", num_classes=8, num_segments=T, **OPTIONS)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, T, SIZE, SIZE, 3)))
    return (model, variables, *_clips("val", 1))


@pytest.fixture(scope="module")
def trained():
    """(model, variables, val clips, val labels) after STEPS AdamW steps."""
    model = tea_jax.create_model("tea50", num_classes=8, num_segments=T, **OPTIONS)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, T, SIZE, SIZE, 3)))
    optimizer = optax.adamw(1e-3, weight_decay=1e-4)
    opt_state = optimizer.init(variables["params"])

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(variables, opt_state, video, labels):
        def loss_fn(params):
            logits, updates = model.apply(
                {**variables, "params": params},
                normalize(video),
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates

        grads, updates = jax.grad(loss_fn, has_aux=True)(variables["params"])
        changes, opt_state = optimizer.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], changes)
        return {"params": params, **updates}, opt_state

    clips, labels = _clips("train", TRAIN_VIDEOS)
    # Unlike most tests', this loop is compute-bound: it gets XLA's full optimisation.
    step = step.lower(variables, opt_state, clips[:BATCH], labels[:BATCH]).compile(OPTIMIZED)
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        batch = rng.choice(len(clips), BATCH, replace=False)
        variables, opt_state = step(variables, opt_state, clips[batch], labels[batch])
    return (model, variables, *_clips("val", 16))


@pytest.mark.slow
def test_heat_map_peak_on_the_shape(trained):
    """The heat map finds the shape once the model has learned it: the `trained` fixture's 200
    steps take 5-9 minutes on 2 cores."""
    model, variables, clips, _ = trained
    hits, chance = [], []
    for clip in clips:
        explanation = visualize.explain(model, variables, clip)
        boxes = object_boxes(clip)
        hits.append(visualize.peak_hits(explanation.cam, boxes, SIZE))
        chance.append(chance_hits(boxes, explanation.cam.shape[1:], SIZE))
    rate, chance_rate = np.mean(hits), np.mean(chance)
    print(f"peak on the shape in {100 * rate:.1f}% of frames, chance {100 * chance_rate:.1f}%")
    assert rate >= 0.65 and rate >= chance_rate + 0.1, (rate, chance_rate)


def test_explanation_and_command_line(untrained, tmp_path, user_error):
    """Contributions add up to the logit; `--class` picks the class; the PNG and mp4 are written."""
    model, variables, clips, _ = untrained
    explanation = visualize.explain(model, variables, clips[0], class_index=3)
    assert explanation.class_index == 3 and explanation.cam.shape == (T, 2, 2)
    np.testing.assert_allclose(
        explanation.contributions.sum() + explanation.bias, explanation.logit, rtol=1e-4, atol=1e-5
    )
    assert sorted(explanation.gates) == [1, 2, 3, 4]
    assert all(g.shape == (T,) and np.all(np.abs(g) < 0.5) for g in explanation.gates.values())

    model_files.save_model(
        tmp_path / "model", "tea50", {"num_classes": 8, "num_segments": T, **OPTIONS}, variables
    )
    (tmp_path / "model" / "classes.txt").write_text("\n".join(synthetic.CLASSES) + "\n")
    (tmp_path / "model" / "preprocess.json").write_text('{"image_size": 64, "short_side": 64}')
    write_video(str(tmp_path / "clip.mp4"), clips[1])
    visualize.main(
        [
            str(tmp_path / "clip.mp4"),
            "--checkpoint",
            str(tmp_path / "model"),
            "--output",
            str(tmp_path / "out.png"),
            "--mp4",
            str(tmp_path / "out.mp4"),
            "--class",
            "shrinking",
        ]
    )
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with VideoFile(str(tmp_path / "out.mp4")) as video:
        assert video.num_frames == T
    with user_error("neither a class name nor an index"):
        visualize.main(
            [
                str(tmp_path / "clip.mp4"),
                "--checkpoint",
                str(tmp_path / "model"),
                "--output",
                str(tmp_path / "x.png"),
                "--class",
                "jumping",
            ]
        )
