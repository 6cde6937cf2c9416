"""Scoring the views of videos, and the preprocessing stored beside an exported model.

Shared by evaluation (``tea_jax.train.evaluation``), training's model export and prediction
(``tea_jax.predict``).
"""

import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tea_jax import storage
from tea_jax.data.listfiles import CLASSES_FILE, read_class_names
from tea_jax.data.normalization import normalize

PREPROCESS_FILE = "preprocess.json"
AVERAGES = ("logits", "softmax")


def score_views(
    variables: dict[str, Any], video: jax.Array, *, model: nn.Module, average: str = "logits"
) -> jax.Array:
    """Video-level scores averaged over the views of each video.

    Args:
      variables: ``{'params', 'batch_stats'}``.
      video: uint8 (B, V, T, H, W, 3) with V views (clips x crops) per video.
      model: the Flax module.
      average: ``'logits'`` averages the views' raw logits (the released ``test_models.py``);
        ``'softmax'`` their probabilities.

    Returns:
      (B, C) float32 scores.
    """
    if average not in AVERAGES:
        raise ValueError(f"Unknown score average {average!r}: use logits or softmax.")
    b, v = video.shape[:2]
    clips = normalize(video.reshape(b * v, *video.shape[2:]))
    logits = model.apply(variables, clips, train=False).astype(jnp.float32)
    logits = logits.reshape(b, v, -1)
    if average == "softmax":
        return jax.nn.softmax(logits, axis=-1).mean(axis=1)
    return logits.mean(axis=1)


def write_preprocessing(
    model_dir: str, image_size: int, short_side: int | None, classes: str | None
) -> None:
    """Stores the input size (``preprocess.json``) and a copy of the class names file
    ``classes`` (as ``classes.txt``, when it exists) beside an exported model."""
    preprocess = {"image_size": image_size, "short_side": short_side}
    storage.write_text(storage.join(model_dir, PREPROCESS_FILE), json.dumps(preprocess, indent=2))
    if classes and storage.isfile(classes):
        storage.copy(classes, storage.join(model_dir, CLASSES_FILE))


def read_preprocessing(model_dir: str) -> tuple[dict, list[str] | None]:
    """``(preprocess.json contents or {}, class names or None)`` stored beside a model."""
    preprocess, names = {}, None
    path = storage.join(model_dir, PREPROCESS_FILE)
    if storage.exists(path):
        preprocess = json.loads(storage.read_text(path))
    path = storage.join(model_dir, CLASSES_FILE)
    if storage.exists(path):
        names = read_class_names(path)
    return preprocess, names
