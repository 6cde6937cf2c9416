"""Spatial augmentation of clips, the same parameters for every frame.

Boxes are `(x, y, w, h)` in the coordinates of the frame resized to a short side of `short_side`
(TSN's GroupScale); `crop_resize` maps them back to the stored frame, so a frame is resized once.
"""

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after resizing the short side to `short_side` (None: unchanged)."""
    if short_side is None or min(width, height) == short_side:
        return width, height
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def resize(
    image: np.ndarray,
    size: tuple[int, int],
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Resizes `box` (x0, y0, x1, y1; default the whole image) of (H, W, 3) to `size` = (w, h).

    Shrinking is PIL's bilinear resize, the released code's `GroupScale`: its filter widens with
    the scale factor, so it averages the pixels it drops instead of aliasing, and it reads the
    pixels around `box`, so a box resized alone equals the box of the whole resized frame.
    Enlarging is bilinear (`cv2.INTER_LINEAR`).
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box or (0, 0, width, height)
    if size == (x1 - x0, y1 - y0) and all(float(v).is_integer() for v in (x0, y0, x1, y1)):
        return np.ascontiguousarray(image[int(y0) : int(y1), int(x0) : int(x1)])
    if size[0] <= x1 - x0 and size[1] <= y1 - y0:
        resized = Image.fromarray(image).resize(size, Image.BILINEAR, box=(x0, y0, x1, y1))
        return np.asarray(resized)
    crop = image[round(y0) : round(y1), round(x0) : round(x1)]
    return cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)


def resize_short_side(frame: np.ndarray, short_side: int | None) -> np.ndarray:
    """Resizes (H, W, 3) so that min(H, W) == short_side (None: unchanged)."""
    height, width = frame.shape[:2]
    return resize(frame, scaled_size(width, height, short_side))


def multiscale_crop_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    output_size: int,
    scales: Sequence[float] = (1, 0.875, 0.75, 0.66),
    max_distort: int = 1,
) -> Box:
    """TSN's multi-scale crop (GroupMultiScaleCrop with more_fix_crop).

    Crop sides are `int(s * min(width, height))` for s in `scales`, snapped to `output_size`
    when within 3 pixels; width and height scale indices differ by at most `max_distort`; the
    origin is one of 13 fixed positions (corners, centre, edge midpoints, quarter points) on a grid
    of step `((width - w) // 4, (height - h) // 4)`.
    """
    base = min(width, height)
    sides = [int(base * s) for s in scales]
    sides = [output_size if abs(s - output_size) < 3 else s for s in sides]
    pairs = [
        (w, h)
        for i, h in enumerate(sides)
        for j, w in enumerate(sides)
        if abs(i - j) <= max_distort
    ]
    w, h = pairs[rng.integers(len(pairs))]
    step_x, step_y = (width - w) // 4, (height - h) // 4
    i, j = FIXED_OFFSETS[rng.integers(len(FIXED_OFFSETS))]
    return i * step_x, j * step_y, w, h


# Crop origins in units of the grid step, in the order of TSN's fill_fix_offset.
FIXED_OFFSETS = (
    (0, 0),
    (4, 0),
    (0, 4),
    (4, 4),
    (2, 2),
    (0, 2),
    (4, 2),
    (2, 4),
    (2, 0),
    (1, 1),
    (3, 1),
    (1, 3),
    (3, 3),
)


def center_crop_box(width: int, height: int, size: int) -> Box:
    """A `size` square in the centre (torchvision's CenterCrop rounding)."""
    return round((width - size) / 2), round((height - size) / 2), size, size


def three_crop_boxes(width: int, height: int, size: int) -> list[Box]:
    """Three `size` squares along the long side, at 0, 2 and 4 steps of `(long - size) // 4`.

    Landscape frames: left/centre/right, vertically centred, as the released `GroupFullResSample`.
    Portrait frames: top/centre/bottom (the released code takes three identical centre crops).
    """
    if width >= height:
        step, y = (width - size) // 4, (height - size) // 2
        return [(2 * k * step, y, size, size) for k in range(3)]
    step, x = (height - size) // 4, (width - size) // 2
    return [(x, 2 * k * step, size, size) for k in range(3)]


def crop_resize(
    frames: np.ndarray, box: Box, short_side: int | None, output_size: int
) -> np.ndarray:
    """Crops `box` (given on the frames resized to `short_side`) and resizes it to a square.

    Args:
      frames: uint8 (T, H, W, 3).
      box: (x, y, w, h) in the resized frame.
      short_side: the short side `box` refers to; None: the stored size.
      output_size: side of the output.

    Returns:
      uint8 (T, output_size, output_size, 3).
    """
    _, height, width, _ = frames.shape
    x, y, w, h = box
    scaled_width, scaled_height = scaled_size(width, height, short_side)
    fx, fy = width / scaled_width, height / scaled_height
    region = (x * fx, y * fy, min((x + w) * fx, width), min((y + h) * fy, height))
    return np.stack([resize(f, (output_size, output_size), region) for f in frames])
