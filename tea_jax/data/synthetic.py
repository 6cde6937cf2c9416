"""Synthetic video datasets whose classes per-frame appearance cannot tell apart.

Three tasks (`SyntheticOptions.task`), each a set of classes in exact time-reversal pairs:
- `motion` (the default): 8 classes of a shape's motion, described below;
- `clutter`: 8 directions of a small object's slow motion over a textured, shaking background (see
  `_clutter_pair`): only short-range motion relative to the background tells them;
- `order`: which of two brief events came first, the frame brightening or darkening (see
  `_order_pair`): when they are apart, only aggregation over a long temporal range sees both.

In the `motion` task, each video shows one bright shape on a near-plain background moving left to
right, top to bottom, circling clockwise or growing (class A of a pair); its time reversal is class
B (right to left, bottom to top, circling counter-clockwise, shrinking). Every split holds each
generated video and its exact reversal, so per-frame statistics cannot tell the classes of a pair
apart: a model that averages per-frame predictions stays at chance on the pairs, a temporal model
can reach ~100%.

The clockwise pair moves the shape along a circle rather than spinning it in place: the reduced
TEA of the embedded default learns a circling direction within its budget, while the direction of
a shape spinning about its own centre stayed at chance (tried with 0.3-0.4 rad per frame and with
larger shapes).

Usage:
  python -m tea_jax.data.synthetic --output data/synthetic [--seed 0] [--num_train 1600]

Writes `OUTPUT/{train,val}/*.mp4`, list files `OUTPUT/{train,val}.txt` (lines `path label`, paths
relative to OUTPUT), `OUTPUT/classes.txt` and `OUTPUT/meta.json` (the generation options).
"""

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import tempfile

import cv2
import numpy as np

from tea_jax import cli
from tea_jax.data.config import SyntheticOptions
from tea_jax.data.video import write_video

CLASSES = (
    "moving left to right",
    "moving right to left",
    "moving top to bottom",
    "moving bottom to top",
    "circling clockwise",
    "circling counter-clockwise",
    "growing",
    "shrinking",
)
# Label pairs exchanged by a horizontal flip.
FLIP_LABEL_PAIRS = ((0, 1), (4, 5))

# Directions of the clutter task's object, as (dx, dy) per frame with y pointing down; classes
# 2k and 2k + 1 are opposite directions, so a time reversal maps one onto the other.
_CLUTTER_DIRECTIONS = {
    "moving east": (1, 0),
    "moving west": (-1, 0),
    "moving south": (0, 1),
    "moving north": (0, -1),
    "moving south-east": (1, 1),
    "moving north-west": (-1, -1),
    "moving south-west": (-1, 1),
    "moving north-east": (1, -1),
}
ORDER_CLASSES = ("brightening before darkening", "darkening before brightening")

TASKS = {
    "motion": (CLASSES, FLIP_LABEL_PAIRS),
    # A horizontal flip exchanges east and west, south-east and south-west, north-west and
    # north-east.
    "clutter": (tuple(_CLUTTER_DIRECTIONS), ((0, 1), (4, 6), (5, 7))),
    "order": (ORDER_CLASSES, ()),
}

# Parameters of the clutter and order tasks, fixed by whether TEA learns the task (see the sweep
# in docs/synthetic_benchmarks.md) before the other networks ran.
CLUTTER_FRAMES = (12, 16)  # shortest and longest video
CLUTTER_OBJECT_SPEED = (1.0, 1.25)  # pixels per frame, relative to the background
CLUTTER_OBJECT_RADIUS = (0.08, 0.125)  # fraction of the frame size
CLUTTER_SHAKE = 1.5  # camera shake, uniform in [-CLUTTER_SHAKE, CLUTTER_SHAKE] pixels per axis
CLUTTER_TEXTURE_CELL = 4  # pixels per cell of the background texture
ORDER_FRAMES = 32  # every video; train with num_segments=32 so that every frame is seen
ORDER_EVENT_FRAMES = 3  # length of each event
ORDER_ADJACENT = 0.5  # share of videos whose second event starts as the first one ends
ORDER_GAP = (4, 11)  # in the others, frames from the start of the first event to that of the second
ORDER_MARGIN = 8  # frames between either event and either end of the video

# Asymmetric polygons, in units of the object radius.
_SHAPES = (
    ((-0.8, -1), (-0.2, -1), (-0.2, 0.4), (0.8, 0.4), (0.8, 1), (-0.8, 1)),  # L
    ((-1, -0.35), (0.2, -0.35), (0.2, -0.85), (1, 0), (0.2, 0.85), (0.2, 0.35), (-1, 0.35)),
    ((-1, -0.6), (1, -0.2), (-0.3, 0.9)),  # scalene triangle
    ((-0.7, -1), (0.8, -1), (0.8, -0.1), (-0.1, -0.1), (-0.1, 1), (-0.7, 1)),  # P
    ((-1, -1), (1, -1), (1, -0.4), (0.3, -0.4), (0.3, 1), (-0.3, 1), (-0.3, -0.4), (-1, -0.4)),
)
_SUBPIXEL_BITS = 4

_META_VERSION = 3


DEFAULT_OPTIONS = SyntheticOptions()


def _meta(options: SyntheticOptions) -> dict:
    """What `meta.json` records: a dataset whose meta differs is regenerated."""
    parameters = {
        "clutter": {
            "frames": CLUTTER_FRAMES,
            "object_speed": CLUTTER_OBJECT_SPEED,
            "object_radius": CLUTTER_OBJECT_RADIUS,
            "shake": CLUTTER_SHAKE,
            "texture_cell": CLUTTER_TEXTURE_CELL,
        },
        "order": {
            "frames": ORDER_FRAMES,
            "event_frames": ORDER_EVENT_FRAMES,
            "adjacent": ORDER_ADJACENT,
            "gap": ORDER_GAP,
            "margin": ORDER_MARGIN,
        },
    }.get(options.task, {})
    return {**dataclasses.asdict(options), "task_parameters": parameters, "version": _META_VERSION}


def _background(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """A dark near-plain colour with a faint static texture; float (size, size, 3) in [0, 1]."""
    hue = rng.uniform(0, 180)
    hsv = np.array([[[hue, rng.uniform(0, 120), rng.uniform(25, 80)]]], np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    noise = rng.uniform(-1, 1, (8, 8, 3)).astype(np.float32)
    texture = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(colour + amplitude * texture, 0, 1)


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 200), rng.uniform(210, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0


def _render(background, colour, shape, centre, radius, angle) -> np.ndarray:
    """Draws the shape (anti-aliased, sub-pixel) over the background; uint8 (H, W, 3)."""
    points = np.asarray(shape, np.float64) * radius
    cos, sin = np.cos(angle), np.sin(angle)
    points = points @ np.array([[cos, sin], [-sin, cos]]) + np.asarray(centre)
    fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    mask = np.zeros(background.shape[:2], np.float32)
    cv2.fillPoly(mask, [fixed], 1.0, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    image = background * (1 - mask[..., None]) + colour * mask[..., None]
    return np.round(image * 255).astype(np.uint8)


def _motion(pair: int, rng: np.random.Generator, options: SyntheticOptions, num_frames: int):
    """Per-frame (centre, radius, angle) of the class-A motion of `pair`."""
    size, t = options.size, np.arange(num_frames)
    angle = np.full(num_frames, rng.uniform(0, 2 * np.pi))
    if pair in (0, 1):  # translation along x (pair 0) or y (pair 1)
        radius = rng.uniform(0.08, 0.125) * size
        speed = min(rng.uniform(*options.speed), (size - 2 * radius - 3) / (num_frames - 1))
        start = rng.uniform(radius + 1, size - radius - 1 - speed * (num_frames - 1))
        along = start + speed * t
        across = np.full(num_frames, rng.uniform(radius + 1, size - radius - 1))
        centres = np.stack([along, across] if pair == 0 else [across, along], axis=1)
        radii = np.full(num_frames, radius)
    elif pair == 2:  # clockwise on screen (y points down): the angle increases
        radius = rng.uniform(0.08, 0.125) * size
        circle = rng.uniform(0.17, 0.23) * size
        middle = rng.uniform(circle + radius + 2, size - circle - radius - 2, 2)
        phase = angle[0] + rng.uniform(*options.orbit) * t / (num_frames - 1)
        centres = middle + circle * np.stack([np.cos(phase), np.sin(phase)], axis=1)
        radii = np.full(num_frames, radius)
    else:  # growing
        growth = rng.uniform(*options.growth)
        end = rng.uniform(0.3, 0.4) * size
        radii = end / (1 + growth) ** (num_frames - 1 - t)
        centres = np.tile(rng.uniform(end + 1, size - end - 1, 2), (num_frames, 1))
    return centres, radii, angle


def _textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Colourful clutter of CLUTTER_TEXTURE_CELL-pixel blobs; float (size, size, 3) in [0, 1]."""
    cells = size // CLUTTER_TEXTURE_CELL
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 160), rng.uniform(90, 140)]]], np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    noise = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
    texture = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(colour + 0.25 * texture, 0, 1)


def _clutter_motion(pair: int, rng: np.random.Generator, size: int):
    """Camera and object paths of a class-(2 * `pair`) clutter video.

    Returns:
      (camera, centres, radius): per-frame camera offsets (T, 2) and object centres in the frame
      (T, 2), as (x, y) pixels, and the object's radius. The object moves relative to the
      background (that is, `centres + camera`) at a constant velocity in the class's direction.
    """
    num_frames = int(rng.integers(CLUTTER_FRAMES[0], CLUTTER_FRAMES[1] + 1))
    t = np.arange(num_frames)[:, None]
    direction = np.asarray(list(_CLUTTER_DIRECTIONS.values())[2 * pair], np.float64)
    radius = rng.uniform(*CLUTTER_OBJECT_RADIUS) * size
    velocity = rng.uniform(*CLUTTER_OBJECT_SPEED) * direction / np.linalg.norm(direction)
    camera = rng.uniform(-CLUTTER_SHAKE, CLUTTER_SHAKE, (num_frames, 2))
    path = velocity * t - camera
    low = radius + 1 - path.min(0)
    high = size - radius - 1 - path.max(0)
    if np.any(high < low):
        raise AssertionError("the clutter task's parameters let the object leave the frame")
    return camera, rng.uniform(low, high) + path, radius


def _clutter_pair(pair: int, rng: np.random.Generator, options: SyntheticOptions) -> np.ndarray:
    """Class 2 * `pair` of the clutter task: uint8 frames (T, size, size, 3), 12-16 frames.

    The camera shakes over a textured background by up to CLUTTER_SHAKE pixels per axis in every
    frame (sub-pixel), and a small shape moves relative to the background at 1-1.25 pixels per frame
    in the class's direction. Between two neighbouring frames the shape's step on screen is its own
    plus the shake's, which is as large, so its direction shows only against the background or over
    many frames. The shape stays whole inside the frame.
    """
    size = options.size
    camera, centres, radius = _clutter_motion(pair, rng, size)
    margin = int(np.ceil(np.abs(camera).max())) + 2
    world = _textured_background(rng, size + 2 * margin)
    colour = _object_colour(rng)
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    angle = rng.uniform(0, 2 * np.pi)
    frames = []
    for (x, y), centre in zip(camera, centres, strict=True):
        view = np.float32([[1, 0, -(margin + x)], [0, 1, -(margin + y)]])
        background = cv2.warpAffine(world, view, (size, size), flags=cv2.INTER_LINEAR)
        frames.append(_render(background, colour, shape, centre, radius, angle))
    return np.stack(frames)


def _order_events(rng: np.random.Generator) -> tuple[int, int]:
    """First frames of the brightening and of the darkening in an order video of class 0."""
    if rng.random() < ORDER_ADJACENT:
        gap = ORDER_EVENT_FRAMES
    else:
        gap = int(rng.integers(ORDER_GAP[0], ORDER_GAP[1] + 1))
    last_start = ORDER_FRAMES - ORDER_MARGIN - ORDER_EVENT_FRAMES - gap
    first = int(rng.integers(ORDER_MARGIN, last_start + 1))
    return first, first + gap


def _order_pair(rng: np.random.Generator, options: SyntheticOptions) -> np.ndarray:
    """Class 0 of the order task ("brightening before darkening"): uint8 frames (ORDER_FRAMES,
    size, size, 3).

    Two large shapes sit still, left and right, on a near-plain background. For
    ORDER_EVENT_FRAMES frames the whole frame brightens (halfway to grey-white); later, for as
    long, it darkens (to 30%). Half of the videos (ORDER_ADJACENT) have the second event start as
    the first ends; in the others it starts ORDER_GAP frames after the first one starts, 1-8
    frames after it ends. Both events stay ORDER_MARGIN frames away from either end, so a network
    that sees one event and a clip boundary together still cannot tell which came first; its time
    reversal ("darkening before brightening") holds the same frames.
    """
    size = options.size
    brighten, darken = _order_events(rng)
    background = _background(rng, size, options.texture_amplitude)
    radius = 0.2 * size
    x = rng.uniform(0.25, 0.35, 2) * size * np.array([1, -1]) + np.array([0, size])
    centres = np.stack([rng.permutation(x), rng.uniform(0.3, 0.7, 2) * size], axis=1)
    colours = [_object_colour(rng) for _ in range(2)]
    shapes = [_SHAPES[i] for i in rng.choice(len(_SHAPES), 2, replace=False)]
    angles = rng.uniform(0, 2 * np.pi, 2)
    image = _render(background, colours[0], shapes[0], centres[0], radius, angles[0])
    image = _render(image / 255.0, colours[1], shapes[1], centres[1], radius, angles[1])
    frames = np.repeat(image[None], ORDER_FRAMES, axis=0)
    frames[brighten : brighten + ORDER_EVENT_FRAMES] = np.round(0.5 * image + 127.5)
    frames[darken : darken + ORDER_EVENT_FRAMES] = np.round(0.3 * image)
    return frames


def generate_pair(options: SyntheticOptions, split: str, index: int) -> tuple[int, np.ndarray]:
    """Renders base video `index` of `split`.

    Returns:
      (pair, frames): the class pair (classes 2 * pair and 2 * pair + 1 of the task) and uint8
      frames (T, size, size, 3) of its first class; reversed along T they are a video of the
      second.
    """
    rng = np.random.default_rng([options.seed, ("train", "val").index(split), index])
    num_pairs = len(TASKS[options.task][0]) // 2
    pair = index % num_pairs
    if options.task == "clutter":
        return pair, _clutter_pair(pair, rng, options)
    if options.task == "order":
        return pair, _order_pair(rng, options)
    num_frames = int(rng.integers(options.min_frames, options.max_frames + 1))
    background = _background(rng, options.size, options.texture_amplitude)
    colour = _object_colour(rng)
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    centres, radii, angles = _motion(pair, rng, options, num_frames)
    frames = np.stack(
        [
            _render(background, colour, shape, c, r, a)
            for c, r, a in zip(centres, radii, angles, strict=True)
        ]
    )
    return pair, frames


def _write_pair(job) -> list[tuple[str, int]]:
    options, output, split, index = job
    pair, frames = generate_pair(options, split, index)
    lines = []
    for reverse in (False, True):
        relative = os.path.join(split, f"{index:05d}_{'b' if reverse else 'a'}.mp4")
        write_video(os.path.join(output, relative), frames[::-1] if reverse else frames)
        lines.append((relative, 2 * pair + int(reverse)))
    return lines


def generate(output: str, options: SyntheticOptions = DEFAULT_OPTIONS, workers: int = 2) -> None:
    """Writes the dataset into `output` (created; must not exist yet)."""
    if options.task not in TASKS:
        raise ValueError(f"unknown synthetic task '{options.task}'; known: {', '.join(TASKS)}")
    os.makedirs(output)
    jobs = []
    for split, count in (("train", options.num_train), ("val", options.num_val)):
        os.makedirs(os.path.join(output, split))
        jobs += [(options, output, split, i) for i in range(count // 2)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_write_pair, jobs, chunksize=16)
    else:
        results = [_write_pair(job) for job in jobs]
    for split in ("train", "val"):
        with open(os.path.join(output, f"{split}.txt"), "w") as f:
            for (_, _, job_split, _), lines in zip(jobs, results, strict=True):
                if job_split == split:
                    f.writelines(f"{path} {label}\n" for path, label in lines)
    with open(os.path.join(output, "classes.txt"), "w") as f:
        f.writelines(f"{name}\n" for name in TASKS[options.task][0])
    with open(os.path.join(output, "meta.json"), "w") as f:
        json.dump(_meta(options), f, indent=2)


def _read_meta(root: str) -> dict | None:
    try:
        with open(os.path.join(root, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure(root: str, options: SyntheticOptions = DEFAULT_OPTIONS, workers: int = 2) -> str:
    """Generates the dataset into `root` unless it is there already with the same options.

    A dataset generated with other options (or by another version of the generator) is replaced.
    Generation goes to a temporary folder renamed into place, so concurrent callers and
    interrupted runs never leave a partial dataset.

    Returns:
      `root`.

    Raises:
      ValueError: `root` exists and is not a synthetic dataset (no meta.json); it is left alone.
    """
    expected = json.loads(json.dumps(_meta(options)))
    meta = _read_meta(root)
    if meta == expected:
        return root
    if os.path.exists(root) and meta is None:
        raise ValueError(f"{root} exists but holds no synthetic dataset (no meta.json)")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        if meta is not None:
            logging.warning("regenerating %s: it was generated with other options %s", root, meta)
            os.rename(root, os.path.join(staging, "old"))
        generate(os.path.join(staging, "data"), options, workers)
        os.rename(os.path.join(staging, "data"), root)
    except OSError:
        if _read_meta(root) != expected:  # not a concurrent caller that generated the same data
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


@cli.command
def main(argv=None) -> None:
    defaults = SyntheticOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to create")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes")
    for field in dataclasses.fields(SyntheticOptions):
        value = getattr(defaults, field.name)
        if isinstance(value, tuple):
            parser.add_argument(f"--{field.name}", type=float, nargs=2, default=value)
        else:
            parser.add_argument(f"--{field.name}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    output, workers = args.pop("output"), args.pop("workers")
    options = SyntheticOptions(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    )
    generate(output, options, workers)
    print(f"wrote {options.num_train} training and {options.num_val} validation videos to {output}")


if __name__ == "__main__":
    main()
