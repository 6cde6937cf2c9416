"""Shows where and when a model looks: Grad-CAM per frame, per-frame scores and ME's gates.

  python -m tea_jax.visualize --checkpoint runs/synthetic_tea8/model \
      data/synthetic/val/00000_a.mp4 --output explain.png [--mp4 explain.mp4] \
      [--class NAME_OR_INDEX]

For one video (the centre frame of each of the model's T segments, preprocessed as by
`tea_jax.predict`) the PNG shows:

- the sampled frames with a Grad-CAM heat map over each: the last stage's activations `A_t`
  weighted by the spatial mean of the class score's gradient, `relu(sum_k mean_hw(dS/dA_t^k)
  A_t^k)`, computed per frame, upsampled bilinearly and scaled by the video's maximum;
- the contribution of each frame to the class score: `sum(A_t * dS/dA_t)`. Everything after the
  last stage is linear in the released head (average pool, per-frame classifier, mean over
  frames), so the contributions add up to the logit minus the classifier's bias;
- Motion Excitation over time: the mean over channels of ME's gate `sigmoid(y) - 0.5` per frame,
  averaged over the blocks of each stage (no panel for models without ME). The last frame has no
  successor, so its motion is zero;
- the top-5 classes and their probabilities in the title.

`--class` chooses the explained class (default: the predicted one); `--mp4` also writes the frames
with their heat maps as a video.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tea_jax import cli, storage
from tea_jax.data.normalization import normalize
from tea_jax.data.video import write_video
from tea_jax.errors import ConfigError
from tea_jax.predictor import Predictor

HEAT_ALPHA = 0.45
TOP_K = 5


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What `explain` computes for one clip of T frames.

    Attributes:
      probabilities: (C,) softmax of the logits.
      class_index: the explained class.
      cam: (T, h, w) Grad-CAM on the last stage's (h, w) grid, not normalised.
      contributions: (T,) each frame's contribution to the class logit.
      bias: the classifier bias of the class (logit = contributions.sum() + bias).
      logit: the class logit.
      gates: stage number -> (T,) mean ME gate per frame; empty without ME.
    """

    probabilities: np.ndarray
    class_index: int
    cam: np.ndarray
    contributions: np.ndarray
    bias: float
    logit: float
    gates: dict[int, np.ndarray]


def last_block(model: nn.Module) -> str:
    """Name of the network's last block, e.g. `layer4_0`: the output Grad-CAM looks at."""
    return f"layer{len(model.stage_sizes)}_{model.stage_sizes[-1] - 1}"


def _forward(model, variables, video, delta):
    """Logits, last-stage features and intermediates, with `delta` added to those features."""
    block, captured = last_block(model), {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.name == block:
            captured["features"] = out
            out = out + delta
        return out

    with nn.intercept_methods(interceptor):
        logits, state = model.apply(variables, video, train=False, mutable=["intermediates"])
    return logits, captured["features"], state.get("intermediates", {})


def _stage_gates(intermediates, num_segments: int) -> dict[int, jax.Array]:
    """Mean ME gate per frame for each stage: (T,) arrays."""
    per_stage: dict[int, list[jax.Array]] = {}
    for name, block in intermediates.items():
        if "me" in block:
            stage = int(name.removeprefix("layer").split("_")[0])
            (gate,) = block["me"]["gate"]
            per_stage.setdefault(stage, []).append(gate.reshape(num_segments, -1).mean(axis=1))
    return {stage: jnp.mean(jnp.stack(g), axis=0) for stage, g in sorted(per_stage.items())}


@functools.partial(jax.jit, static_argnums=0)
def _explain(model, variables, clip, requested):
    video = normalize(clip[None])
    shape = jax.eval_shape(lambda: _forward(model, variables, video, 0.0)[1]).shape

    def score(delta):
        logits, features, intermediates = _forward(model, variables, video, delta)
        index = jnp.where(requested >= 0, requested, jnp.argmax(jax.lax.stop_gradient(logits[0])))
        return logits[0, index], (logits[0], index, features, intermediates)

    grads, (logits, index, features, intermediates) = jax.grad(score, has_aux=True)(
        jnp.zeros(shape, jnp.float32)
    )
    cam = nn.relu(jnp.einsum("thwk,tk->thw", features, grads.mean(axis=(1, 2))))
    return {
        "probabilities": jax.nn.softmax(logits),
        "class_index": index,
        "cam": cam,
        "contributions": jnp.sum(features * grads, axis=(1, 2, 3)),
        "bias": variables["params"]["fc"]["bias"][index],
        "logit": logits[index],
        "gates": _stage_gates(intermediates, model.num_segments),
    }


def explain(
    model: nn.Module, variables: Any, clip: np.ndarray, class_index: int | None = None
) -> Explanation:
    """Grad-CAM, per-frame contributions and ME gates of one clip.

    Args:
      model: a registry network (`tea_jax.create_model` / `load_model`).
      variables: its `params` and `batch_stats`.
      clip: uint8 (T, S, S, 3) RGB frames, T = `model.num_segments`.
      class_index: the class to explain (default: the predicted one).

    Returns:
      An `Explanation`.
    """
    requested = -1 if class_index is None else class_index
    if not -1 <= requested < model.num_classes:
        raise ConfigError(f"class {class_index} is outside [0, {model.num_classes})")
    out = _explain(model, variables, jnp.asarray(clip), jnp.int32(requested))
    out = jax.tree.map(np.asarray, out)
    return Explanation(
        probabilities=out["probabilities"],
        class_index=int(out["class_index"]),
        cam=out["cam"],
        contributions=out["contributions"],
        bias=float(out["bias"]),
        logit=float(out["logit"]),
        gates=out["gates"],
    )


def heat_maps(cam: np.ndarray, size: int) -> np.ndarray:
    """(T, h, w) Grad-CAM -> (T, size, size) in [0, 1], bilinear, scaled by the video's maximum."""
    maps = np.asarray(jax.image.resize(cam, (cam.shape[0], size, size), "bilinear"))
    peak = maps.max()
    return np.clip(maps / peak, 0, 1) if peak > 0 else np.zeros_like(maps)


def peak_cells(cam: np.ndarray) -> np.ndarray:
    """(T, 2) row and column of each frame's Grad-CAM maximum on the (h, w) grid."""
    t, _, w = cam.shape
    flat = cam.reshape(t, -1).argmax(axis=1)
    return np.stack([flat // w, flat % w], axis=1)


def peak_hits(cam: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Whether each frame's Grad-CAM peak cell overlaps a box.

    The last stage's grid is coarse (2x2 for 64x64 frames), so a peak is the image region of a
    grid cell, `size / h` pixels square.

    Args:
      cam: (T, h, w) Grad-CAM.
      boxes: (T, 4) `(top, left, bottom, right)` pixel boxes, inclusive.
      size: frame side in pixels.

    Returns:
      (T,) booleans.
    """
    _, h, w = cam.shape
    rows, cols = peak_cells(cam).T
    cell_h, cell_w = size / h, size / w
    top, left, bottom, right = np.asarray(boxes, np.float64).T
    return (
        (top < (rows + 1) * cell_h)
        & (bottom + 1 > rows * cell_h)
        & (left < (cols + 1) * cell_w)
        & (right + 1 > cols * cell_w)
    )


def _title(explanation: Explanation, names: Sequence[str]) -> str:
    top = np.argsort(-explanation.probabilities)[:TOP_K]
    ranked = "   ".join(
        f"{rank}. {names[c]} {100 * explanation.probabilities[c]:.1f}%"
        for rank, c in enumerate(top, 1)
    )
    chosen = names[explanation.class_index]
    kind = "predicted" if explanation.class_index == top[0] else "chosen"
    return f"Top-{len(top)}: {ranked}\nGrad-CAM and frame contributions for '{chosen}' ({kind})"


def plot(
    clip: np.ndarray, explanation: Explanation, names: Sequence[str], path: str | os.PathLike
) -> None:
    """Writes the figure (frames with heat maps, frame contributions, ME gates) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = clip.shape[0]
    maps = heat_maps(explanation.cam, clip.shape[1])
    rows = 3 if explanation.gates else 2
    fig = plt.figure(figsize=(max(10.0, 1.5 * t + 1.5), 2.2 + 2.4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, t, height_ratios=[1.2] + [1] * (rows - 1))
    frame_axes = []
    for i in range(t):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(clip[i])
        image = ax.imshow(maps[i], cmap="jet", alpha=HEAT_ALPHA, vmin=0, vmax=1)
        ax.set_title(f"frame {i + 1}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        frame_axes.append(ax)
    bar = fig.colorbar(image, ax=frame_axes, fraction=0.02, pad=0.01)
    bar.set_label("Grad-CAM / video max", fontsize=8)

    frames = np.arange(1, t + 1)
    ax = fig.add_subplot(grid[1, :t])
    colours = np.where(explanation.contributions >= 0, "tab:blue", "tab:red")
    ax.bar(frames, explanation.contributions, color=colours)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(frames)
    ax.set_xlim(0.5, t + 0.5)
    ax.set_xlabel("frame")
    ax.set_ylabel("contribution to logit")
    ax.set_title(
        f"Per-frame contribution: logit {explanation.logit:.2f} = sum of bars "
        f"{explanation.contributions.sum():.2f} + bias {explanation.bias:.2f}",
        fontsize=10,
    )
    if explanation.gates:
        ax = fig.add_subplot(grid[2, :t])
        for stage, gate in explanation.gates.items():
            ax.plot(frames, gate, marker="o", label=f"stage {stage}")
        ax.set_xticks(frames)
        ax.set_xlim(0.5, t + 0.5)
        ax.set_xlabel("frame (t: motion from frame t to t+1; none after the last)")
        ax.set_ylabel("mean ME gate")
        ax.set_title("Motion Excitation over time: channel gate sigmoid(y) - 0.5", fontsize=10)
        ax.legend(fontsize=8, ncols=len(explanation.gates), loc="best")
    fig.suptitle(_title(explanation, names), fontsize=11)
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    storage.write_bytes(path, image.getvalue())


def write_overlay_video(
    clip: np.ndarray, explanation: Explanation, path: str, fps: int = 2
) -> None:
    """Writes the frames blended with their heat maps (`jet` colours) as a video."""
    import matplotlib

    maps = heat_maps(explanation.cam, clip.shape[1])
    colours = matplotlib.colormaps["jet"](maps)[..., :3] * 255
    frames = (1 - HEAT_ALPHA) * clip + HEAT_ALPHA * colours
    with storage.local_file(path) as local:
        write_video(local, np.round(frames).astype(np.uint8), fps=fps, lossless=False)


def _class_index(value: str | None, names: Sequence[str]) -> int | None:
    if value is None:
        return None
    if value in names:
        return list(names).index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    raise ConfigError(f"--class {value!r} is neither a class name nor an index below {len(names)}")


@cli.command
def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m tea_jax.visualize", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("video", help="video file")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint directory")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--mp4", help="also write the heat-mapped frames as a video")
    parser.add_argument("--class", dest="class_", help="class name or index to explain")
    parser.add_argument("--labels", help="class names, one per line")
    parser.add_argument("--image-size", type=int, help="crop side (default: as trained)")
    parser.add_argument("--short-side", type=int, help="resize short side (default: as trained)")
    args = parser.parse_args(argv)
    predictor = Predictor(
        args.checkpoint,
        labels=args.labels,
        image_size=args.image_size,
        short_side=args.short_side,
    )
    model, variables = predictor.model, predictor.variables
    names = predictor.names
    clip = predictor.views(args.video)[0]
    explanation = explain(model, variables, clip, _class_index(args.class_, names))
    plot(clip, explanation, names, args.output)
    if args.mp4:
        write_overlay_video(clip, explanation, args.mp4)
    print(f"{args.video}: {names[explanation.class_index]} explained in {args.output}")


if __name__ == "__main__":
    main()
