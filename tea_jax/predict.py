"""Labels video files with a trained model: prints the top-5 classes of each.

  python -m tea_jax.predict --checkpoint runs/synthetic_tea8/model data/synthetic/val/00000.mp4
  python -m tea_jax.predict --checkpoint CKPT --labels kinetics_classes.txt --clips 10 a.mp4 b.mp4

``--checkpoint`` is a model checkpoint (``WORKDIR/model`` exported by ``train.py`` or the output
of ``python -m tea_jax.convert``). Each video gives ``--clips`` TSN clips (the centre frame of
each of the model's T segments), resized to ``--short-side`` and centre-cropped to
``--image-size``; their softmax scores are averaged. Sizes and class names default to the ones
``train.py`` stored beside the exported model (``preprocess.json``, ``classes.txt``).
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

PREPROCESS_FILE = "preprocess.json"
CLASSES_FILE = "classes.txt"


def load_clips(
    path: str, *, num_segments: int, num_clips: int, image_size: int, short_side: int | None
) -> np.ndarray:
    """Decodes the evaluation clips of a video file.

    Returns:
      uint8 (num_clips, num_segments, image_size, image_size, 3).

    Raises:
      tea_jax.data.DataError: the file cannot be read.
    """
    from tea_jax.data import sampling, transforms
    from tea_jax.data.video import VideoFile

    with VideoFile(path) as video:
        indices = sampling.test_indices(video.num_frames, num_segments, num_clips)
        frames = video.read(np.unique(indices))
    position = {f: i for i, f in enumerate(np.unique(indices))}
    _, height, width, _ = frames.shape
    box = transforms.center_crop_box(*transforms.scaled_size(width, height, short_side), image_size)
    clips = [frames[[position[f] for f in clip]] for clip in indices]
    return np.stack([transforms.crop_resize(c, box, short_side, image_size) for c in clips])


def read_preprocessing(checkpoint: str) -> tuple[dict, list[str] | None]:
    """The ``preprocess.json`` options and ``classes.txt`` names beside a model, if present."""
    preprocess, names = {}, None
    path = os.path.join(checkpoint, PREPROCESS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            preprocess = json.load(f)
    path = os.path.join(checkpoint, CLASSES_FILE)
    if os.path.exists(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
    return preprocess, names


class Predictor:
    """A loaded model that returns the top-k classes of video files.

    Args:
      checkpoint: model checkpoint directory.
      labels: class names file (default: ``classes.txt`` beside the model, else indices).
      image_size: crop side (default: as trained, else 224).
      short_side: short side before cropping (default: as trained, else image_size * 256 / 224).
      num_clips: clips averaged per video.
    """

    def __init__(
        self,
        checkpoint: str,
        *,
        labels: str | None = None,
        image_size: int | None = None,
        short_side: int | None = None,
        num_clips: int = 1,
    ):
        from tea_jax.checkpoint import load_model
        from tea_jax.train.step import eval_step

        self.model, self.variables = load_model(checkpoint)
        preprocess, self.names = read_preprocessing(checkpoint)
        if labels:
            with open(labels) as f:
                self.names = [line.strip() for line in f if line.strip()]
        if self.names is not None and len(self.names) != self.model.num_classes:
            raise ValueError(
                f"{labels or checkpoint}: {len(self.names)} class names for a model of "
                f"{self.model.num_classes} classes."
            )
        self.image_size = image_size or preprocess.get("image_size", 224)
        self.short_side = (
            short_side or preprocess.get("short_side") or round(self.image_size * 256 / 224)
        )
        self.num_clips = num_clips
        model = self.model
        self._scores = jax.jit(lambda v, x: eval_step(v, {"video": x}, model=model))

    def __call__(self, path: str, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k ``(class, probability)`` of the video file ``path``."""
        clips = load_clips(
            path,
            num_segments=self.model.num_segments,
            num_clips=self.num_clips,
            image_size=self.image_size,
            short_side=self.short_side,
        )
        scores = np.asarray(self._scores(self.variables, jnp.asarray(clips[None])))[0]
        top = np.argsort(-scores)[:top_k]
        return [(self.names[c] if self.names else str(c), float(scores[c])) for c in top]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="model checkpoint directory")
    parser.add_argument("--labels", help="class names, one per line")
    parser.add_argument("--image-size", type=int, help="crop side (default: as trained, or 224)")
    parser.add_argument("--short-side", type=int, help="resize short side (default: as trained)")
    parser.add_argument("--clips", type=int, default=1, help="clips averaged per video")
    parser.add_argument("videos", nargs="+", help="video files")
    args = parser.parse_args(argv)
    from tea_jax.data import DataError

    try:
        predictor = Predictor(
            args.checkpoint,
            labels=args.labels,
            image_size=args.image_size,
            short_side=args.short_side,
            num_clips=args.clips,
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    failed = 0
    for path in args.videos:
        try:
            top = predictor(path)
        except DataError as e:
            print(f"{path}: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(path)
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {name:<40} {100 * prob:6.2f}%")
    if failed:
        sys.exit(f"{failed} of {len(args.videos)} videos could not be read.")


if __name__ == "__main__":
    main()
