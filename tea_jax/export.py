"""Serializes a model checkpoint's inference function with `jax.export`.

  python -m tea_jax.export --checkpoint runs/synthetic_tea8/model --output tea8.jax
  python -m tea_jax.export --checkpoint CKPT --output tea16.jax --platforms cpu,cuda,tpu \
      --num-segments 16 --image-size 224

The file holds StableHLO with the weights embedded: uint8 RGB video `(N, T, S, S, 3)` in (any
batch size N), float32 logits `(N, num_classes)` out, ImageNet normalisation included. Running it
needs only JAX (and `flatbuffers`), not tea_jax or Flax::

  import jax
  exported = jax.export.deserialize(open("tea8.jax", "rb").read())
  logits = exported.call(video)

Beside it, `<output>.json` records the input layout, the preprocessing of `tea_jax.predict`
(`image_size`, `short_side`), the class names and the platforms lowered for. Lowering for `cuda`
and `tpu` works on a CPU-only machine, and a file for all three platforms is barely larger than
one for a single platform (the weights are stored once).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from tea_jax import cli, storage
from tea_jax.data.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from tea_jax.errors import ConfigError
from tea_jax.inference import read_preprocessing
from tea_jax.model_files import load_model

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
DEFAULT_IMAGE_SIZE = 224


def inference_function(model: nn.Module, variables: Any):
    """The function exported: uint8 video `(N, T, S, S, 3)` -> float32 logits `(N, C)`."""

    def logits(video: jax.Array) -> jax.Array:
        return model.apply(variables, normalize(video), train=False).astype(jnp.float32)

    return logits


def export_model(
    model: nn.Module,
    variables: Any,
    *,
    image_size: int,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> jax.export.Exported:
    """Lowers the inference function for a symbolic batch size and `platforms`.

    Args:
      model: the Flax module; its `num_segments` fixes T.
      variables: its `params` and `batch_stats`, embedded as constants.
      image_size: S, the side of the square frames.
      platforms: `jax.export` platform names.

    Returns:
      The `jax.export.Exported`; `.serialize()` gives the bytes of the file.
    """
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ConfigError(
            f"platforms {list(platforms)}: expected one or more of {', '.join(PLATFORMS)}"
        )
    (batch,) = jax.export.symbolic_shape("N")
    video = jax.ShapeDtypeStruct((batch, model.num_segments, image_size, image_size, 3), jnp.uint8)
    fn = jax.jit(inference_function(model, variables))
    return jax.export.export(fn, platforms=tuple(platforms))(video)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    num_segments: int | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Writes `output` (the serialized function) and `output.json` (how to feed it).

    Args:
      checkpoint: model checkpoint directory (`save_model` / `tea_jax.convert` / `train.py`).
      output: file to write.
      platforms: as in `export_model`.
      num_segments: frames per clip (default: the checkpoint's); the weights of every registry
        model are independent of T.
      image_size: frame side (default: the `preprocess.json` beside the model, else 224).

    Returns:
      The description written to `output.json`.
    """
    checkpoint = os.fspath(checkpoint)
    model, variables = load_model(checkpoint)
    if num_segments is not None:
        model = model.clone(num_segments=num_segments)
    preprocess, names = read_preprocessing(checkpoint)
    image_size = image_size or preprocess.get("image_size") or DEFAULT_IMAGE_SIZE
    exported = export_model(model, variables, image_size=image_size, platforms=platforms)
    description = {
        "input": {
            "shape": ["N", model.num_segments, image_size, image_size, 3],
            "dtype": "uint8",
            "layout": "RGB frames, one per TSN segment; normalised inside the function",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "output": {"shape": ["N", model.num_classes], "dtype": "float32", "kind": "logits"},
        "image_size": image_size,
        "short_side": preprocess.get("short_side"),
        "num_segments": model.num_segments,
        "classes": names,
        "platforms": list(exported.platforms),
        "source": storage.resolve(checkpoint),
    }
    storage.write_bytes(output, exported.serialize())
    storage.write_text(os.fspath(output) + ".json", json.dumps(description, indent=2) + "\n")
    return description


@cli.command
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m tea_jax.export",
        description="Serialize a model's inference function with jax.export.",
    )
    parser.add_argument("--checkpoint", required=True, help="model checkpoint directory")
    parser.add_argument("--output", required=True, help="file to write (and OUTPUT.json)")
    parser.add_argument(
        "--platforms",
        default=",".join(DEFAULT_PLATFORMS),
        help="comma-separated, of cpu,cuda,rocm,tpu (default: %(default)s)",
    )
    parser.add_argument("--num-segments", type=int, help="frames per clip (default: as trained)")
    parser.add_argument("--image-size", type=int, help="frame side (default: as trained, or 224)")
    args = parser.parse_args(argv)
    description = export_checkpoint(
        args.checkpoint,
        args.output,
        platforms=[p for p in args.platforms.split(",") if p],
        num_segments=args.num_segments,
        image_size=args.image_size,
    )
    print(
        f"Exported {args.checkpoint} to {args.output} for {', '.join(description['platforms'])}: "
        f"uint8 {tuple(description['input']['shape'])} -> logits "
        f"{tuple(description['output']['shape'])}"
    )


if __name__ == "__main__":
    main()
