"""Video-level classification metrics, confusion matrix and predictions file."""

import io
import json
import os
from collections.abc import Sequence

import numpy as np

from tea_jax import storage


class ScoreCollector:
    """Collects the video scores of an evaluation, each video exactly once.

    Batches may be padded (``mask`` False) and split over hosts; every host adds the gathered
    global batches, and :meth:`result` checks that every index of the split was seen once.
    """

    def __init__(self, num_examples: int, num_classes: int):
        self.num_examples = num_examples
        self.num_classes = num_classes
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._index: list[np.ndarray] = []

    def add(self, scores: np.ndarray, labels: np.ndarray, index: np.ndarray, mask: np.ndarray):
        """Adds a batch.

        Args:
          scores: (B, C) video scores.
          labels: (B,) int labels.
          index: (B,) int index of each video in the split.
          mask: (B,) bool, False on padding.
        """
        mask = np.asarray(mask, bool)
        self._scores.append(np.asarray(scores, np.float32)[mask])
        self._labels.append(np.asarray(labels, np.int64)[mask])
        self._index.append(np.asarray(index, np.int64)[mask])

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns ``(scores (N, C), labels (N,), index (N,))`` sorted by index.

        Raises:
          ValueError: if a video was seen twice or some were never seen.
        """
        if not self._index:
            raise ValueError("The evaluation saw no videos.")
        index = np.concatenate(self._index)
        order = np.argsort(index, kind="stable")
        index = index[order]
        duplicates = np.unique(index[1:][index[1:] == index[:-1]])
        if duplicates.size:
            raise ValueError(
                f"{duplicates.size} videos were evaluated more than once "
                f"(e.g. index {duplicates[:5].tolist()}); the shards of the hosts overlap."
            )
        if index.size != self.num_examples:
            raise ValueError(
                f"The evaluation saw {index.size} videos but the split has {self.num_examples}."
            )
        return np.concatenate(self._scores)[order], np.concatenate(self._labels)[order], index


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows the true class and columns the predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1, top-5, mean class accuracy, per-class accuracy and loss of video scores.

    Args:
      scores: (N, C) averaged softmax probabilities (or logits).
      labels: (N,) int labels.

    Returns:
      ``top1``, ``top5``, ``mean_class_accuracy`` (over classes present in ``labels``),
      ``per_class_accuracy`` (list of C, NaN for absent classes), ``loss`` (NLL of the
      probabilities, computed from a softmax if the rows are not probabilities),
      ``num_videos`` and ``confusion`` (C, C).
    """
    num_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    top5 = order[:, : min(5, num_classes)]
    predictions = order[:, 0]
    confusion = confusion_matrix(labels, predictions, num_classes)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / support
    probs = scores
    if not (np.all(scores >= 0) and np.allclose(scores.sum(1), 1, atol=1e-3)):
        shifted = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    return {
        "top1": float(np.mean(predictions == labels)),
        "top5": float(np.mean((top5 == labels[:, None]).any(axis=1))),
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "per_class_accuracy": [None if np.isnan(a) else float(a) for a in per_class],
        "loss": float(nll.mean()),
        "num_videos": len(labels),
        "confusion": confusion,
    }


def save_confusion_png(
    confusion: np.ndarray, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> None:
    """Writes a row-normalised confusion matrix as a PNG (class names shown up to 60 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = confusion.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(confusion / confusion.sum(axis=1, keepdims=True))
    size = min(4 + 0.25 * c, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if class_names is not None and c <= 60:
        ax.set_xticks(range(c), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), class_names, fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, image.getvalue())


def write_predictions(
    path: str | os.PathLike,
    scores: np.ndarray,
    labels: np.ndarray,
    video_ids: Sequence[str],
    class_names: Sequence[str] | None = None,
    k: int = 5,
) -> None:
    """Writes one JSON line per video: id, label, top-k classes and their scores."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]

    def name(c):
        return class_names[c] if class_names is not None else int(c)

    lines = []
    for i, top in enumerate(order):
        record = {
            "video": video_ids[i],
            "label": name(labels[i]),
            "top5": [name(c) for c in top],
            "scores": [round(float(scores[i, c]), 6) for c in top],
        }
        lines.append(json.dumps(record) + "\n")
    storage.write_text(path, "".join(lines))
