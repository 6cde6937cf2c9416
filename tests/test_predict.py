"""Prediction reads a video exactly as evaluation does."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import tea_jax
from tea_jax import model_files
from tea_jax.data import default_config
from tea_jax.data.pipeline import create_loader
from tea_jax.data.video import write_video
from tea_jax.inference import PREPROCESS_FILE
from tea_jax.predict import Predictor


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
