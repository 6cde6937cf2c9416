"""Labels video files with a trained model: prints the top-5 classes of each.

  python -m tea_jax.predict --checkpoint runs/synthetic_tea8/model data/synthetic/val/00000_a.mp4
  python -m tea_jax.predict --checkpoint CKPT --labels kinetics_classes.txt --clips 10 a.mp4 b.mp4

``--checkpoint`` is a model checkpoint (``WORKDIR/model`` exported by ``train.py`` or the output
of ``python -m tea_jax.convert``). Each video is read exactly as evaluation reads it
(``tea_jax.data.pipeline.EvalReader``): one TSN clip of segment centres, or ``--clips`` random
TSN clips (seeded), resized to ``--short-side`` and centre-cropped to ``--image-size``; the views'
logits are averaged, as in the released code, and shown as softmax probabilities. Sizes and class
names default to the ones ``train.py`` stored beside the exported model (``preprocess.json``,
``classes.txt``).
"""

import argparse
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tea_jax import cli, inference
from tea_jax.data.errors import DataError
from tea_jax.data.listfiles import Entry, read_class_names
from tea_jax.data.pipeline import EvalReader
from tea_jax.data.sources import VideoFileSource
from tea_jax.errors import ConfigError
from tea_jax.model_files import load_model


class Predictor:
    """A loaded model that returns the top-k classes of video files.

    Args:
      checkpoint: model checkpoint directory.
      labels: class names file (default: ``classes.txt`` beside the model, else indices).
      image_size: crop side (default: as trained, else 224).
      short_side: short side before cropping (default: as trained, else image_size * 256 / 224).
      num_clips: clips averaged per video.
      seed: draws the clips when ``num_clips`` > 1.
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
    ):
        self.model, self.variables = load_model(checkpoint)
        preprocess, self.names = inference.read_preprocessing(checkpoint)
        if labels:
            self.names = read_class_names(labels)
        if self.names is not None and len(self.names) != self.model.num_classes:
            raise ConfigError(
                f"{labels or checkpoint}: {len(self.names)} class names for a model of "
                f"{self.model.num_classes} classes."
            )
        self.image_size = image_size or preprocess.get("image_size", 224)
        self.short_side = (
            short_side or preprocess.get("short_side") or round(self.image_size * 256 / 224)
        )
        self.num_clips, self.seed = num_clips, seed
        model = self.model
        self._logits = jax.jit(lambda v, x: inference.score_views(v, x, model=model))

    def views(self, path: str) -> np.ndarray:
        """The evaluation views of a video file: uint8 (clips, T, image_size, image_size, 3).

        Raises:
          DataError: the file cannot be read.
        """
        reader = EvalReader(
            source=VideoFileSource([Entry(path, 0)]),
            num_classes=self.model.num_classes,
            num_segments=self.model.num_segments,
            image_size=self.image_size,
            short_side=self.short_side,
            dense=False,
            on_error="raise",
            num_clips=self.num_clips,
            crop_size=self.image_size,
            random_clips=True,
            seed=self.seed,
        )
        return reader.load(0)[0]

    def __call__(self, path: str, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k ``(class, probability)`` of the video file ``path``."""
        logits = self._logits(self.variables, jnp.asarray(self.views(path)[None]))
        scores = np.asarray(jax.nn.softmax(logits[0]))
        top = np.argsort(-scores)[:top_k]
        return [(self.names[c] if self.names else str(c), float(scores[c])) for c in top]


@cli.command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="model checkpoint directory")
    parser.add_argument("--labels", help="class names, one per line")
    parser.add_argument("--image-size", type=int, help="crop side (default: as trained, or 224)")
    parser.add_argument("--short-side", type=int, help="resize short side (default: as trained)")
    parser.add_argument("--clips", type=int, default=1, help="clips averaged per video")
    parser.add_argument("--seed", type=int, default=0, help="draws the clips when --clips > 1")
    parser.add_argument("videos", nargs="+", help="video files")
    args = parser.parse_args(argv)
    predictor = Predictor(
        args.checkpoint,
        labels=args.labels,
        image_size=args.image_size,
        short_side=args.short_side,
        num_clips=args.clips,
        seed=args.seed,
    )
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
