"""How often the Grad-CAM peak of `tea_jax.visualize` falls on the synthetic dataset's shape.

  python bench/heatmap_hit_rate.py --checkpoint runs/synthetic_tea8/model --root data/synthetic

For every validation video of the synthetic motion dataset: the model's T frames (as
`tea_jax.predict` samples them), the shape's bounding box in each (its pixels are the bright ones:
the generator draws the shape with an HSV value of at least 210 on a background of at most 80,
plus a texture of +-4%), and whether the peak cell of the predicted class's Grad-CAM overlaps the
box. Chance is the hit rate of a cell drawn uniformly from the last stage's grid.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BRIGHT = 150  # Between the background's maximum (~90) and the shape's minimum (210) channel value.


def object_boxes(clip: np.ndarray) -> np.ndarray:
    """(T, 4) inclusive `(top, left, bottom, right)` boxes of the bright shape.

    Args:
      clip: uint8 (T, H, W, 3) frames.
    """
    boxes = []
    for frame in clip:
        rows, cols = np.nonzero(frame.max(axis=-1) > BRIGHT)
        if rows.size == 0:
            raise ValueError("a frame without the synthetic shape")
        boxes.append((rows.min(), cols.min(), rows.max(), cols.max()))
    return np.asarray(boxes)


def chance_hits(boxes: np.ndarray, grid: tuple[int, int], size: int) -> np.ndarray:
    """(T,) fraction of the grid's cells that each box overlaps."""
    from tea_jax.visualize import peak_hits

    h, w = grid
    rates = np.zeros(len(boxes))
    for r in range(h):
        for c in range(w):
            cam = np.zeros((len(boxes), h, w))
            cam[:, r, c] = 1
            rates += peak_hits(cam, boxes, size)
    return rates / (h * w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--videos", type=int, default=400, help="first N validation videos")
    args = parser.parse_args()

    from tea_jax import visualize
    from tea_jax.predictor import Predictor

    predictor = Predictor(args.checkpoint)
    model, variables, size = predictor.model, predictor.variables, predictor.image_size
    with open(os.path.join(args.root, "val.txt")) as f:
        lines = [line.split() for line in f if line.strip()][: args.videos]
    hits, chance, correct = [], [], 0
    for path, label in lines:
        clip = predictor.views(os.path.join(args.root, path))[0]
        explanation = visualize.explain(model, variables, clip)
        boxes = object_boxes(clip)
        hits.append(visualize.peak_hits(explanation.cam, boxes, size))
        chance.append(chance_hits(boxes, explanation.cam.shape[1:], size))
        correct += explanation.class_index == int(label)
    hits, chance = np.concatenate(hits), np.concatenate(chance)
    print(
        f"{len(lines)} videos, {hits.size} frames: Grad-CAM peak on the shape in "
        f"{100 * hits.mean():.1f}% of frames (chance {100 * chance.mean():.1f}%); "
        f"top-1 {100 * correct / len(lines):.1f}%"
    )


if __name__ == "__main__":
    main()
