"""A loaded model that scores videos as evaluation does: the views of files, or clips."""

import jax
import jax.numpy as jnp
import numpy as np

from tea_jax import inference
from tea_jax.data.listfiles import Entry, read_class_names
from tea_jax.data.pipeline import EvalReader
from tea_jax.data.sources import VideoFileSource
from tea_jax.errors import ConfigError
from tea_jax.model_files import load_model


class Predictor:
    """A loaded model, its preprocessing and class names, and one compiled scoring function.

    Args:
      checkpoint: model checkpoint directory.
      labels: class names file (default: ``classes.txt`` beside the model, else indices).
      image_size: crop side (default: as trained, else 224).
      short_side: short side before cropping (default: as trained, else image_size * 256 / 224).
      num_clips: clips averaged per video.
      seed: draws the clips when ``num_clips`` > 1.
      batch_size: videos (or windows) scored per call; smaller batches are padded to it, so
        every call runs the one compiled function.
    """

    def __init__(
        self,
        checkpoint: str,
        *,
        labels: str | None = None,
        image_size: int | None = None,
        short_side: int | None = None,
        num_clips: int = 1,
        seed: int = 0,
        batch_size: int = 1,
    ):
        if batch_size < 1:
            raise ConfigError(f"--batch must be at least 1, got {batch_size}")
        self.model, self.variables = load_model(checkpoint)
        preprocess, self.names = inference.read_preprocessing(checkpoint)
        if labels:
            self.names = read_class_names(labels)
        if self.names is not None and len(self.names) != self.model.num_classes:
            raise ConfigError(
                f"{labels or checkpoint}: {len(self.names)} class names for a model of "
                f"{self.model.num_classes} classes."
            )
        self.names = self.names or [str(c) for c in range(self.model.num_classes)]
        self.image_size = image_size or preprocess.get("image_size", 224)
        self.short_side = (
            short_side or preprocess.get("short_side") or round(self.image_size * 256 / 224)
        )
        self.num_clips, self.seed, self.batch_size = num_clips, seed, batch_size
        model = self.model
        self._logits = jax.jit(lambda v, x: inference.score_views(v, x, model=model))

    def reader(self, paths: list[str], on_error: str = "raise") -> EvalReader:
        """Evaluation's reader of the files ``paths`` (example i is ``paths[i]``)."""
        return EvalReader(
            source=VideoFileSource([Entry(path, 0) for path in paths]),
            num_classes=self.model.num_classes,
            num_segments=self.model.num_segments,
            image_size=self.image_size,
            short_side=self.short_side,
            dense=False,
            on_error=on_error,
            num_clips=self.num_clips,
            crop_size=self.image_size,
            random_clips=True,
            seed=self.seed,
        )

    def views(self, path: str) -> np.ndarray:
        """The evaluation views of a video file: uint8 (clips, T, image_size, image_size, 3).

        Raises:
          DataError: the file cannot be read.
        """
        return self.reader([path]).load(0)[0]

    def logits(self, views: np.ndarray) -> np.ndarray:
        """float32 (B, C) logits averaged over the views of B <= batch_size videos.

        Args:
          views: uint8 (B, V, T, image_size, image_size, 3).
        """
        count = len(views)
        if count < self.batch_size:
            padding = np.zeros((self.batch_size - count, *views.shape[1:]), views.dtype)
            views = np.concatenate([views, padding])
        return np.asarray(self._logits(self.variables, jnp.asarray(views)))[:count]

    def __call__(self, path: str, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k ``(class, probability)`` of the video file ``path``."""
        probabilities = softmax(self.logits(self.views(path)[None]))[0]
        top = top_classes(probabilities, self.names, top_k)
        return [(t["class"], t["probability"]) for t in top]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of (..., C) logits along the last axis."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def top_classes(probabilities: np.ndarray, names: list[str], k: int) -> list[dict]:
    """The k most probable classes of (C,) probabilities: ``{class, index, probability}``."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"class": names[c], "index": int(c), "probability": round(float(probabilities[c]), 6)}
        for c in order
    ]
