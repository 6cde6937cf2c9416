"""The timeline picture of a long video's window scores: time across, classes down, probability
as colour."""

import io
import os

import numpy as np

from tea_jax import storage
from tea_jax.long_video import WindowScores

MAX_ROWS = 10


def timeline_rows(probabilities: np.ndarray, max_rows: int = MAX_ROWS) -> np.ndarray:
    """The classes shown: every class that is the top one in some window, then the others by
    their highest probability, at most `max_rows` (at least the top ones, in order of first
    appearance).

    Args:
      probabilities: (W, C).

    Returns:
      int (R,) class indices.
    """
    winners = list(dict.fromkeys(np.argmax(probabilities, axis=1).tolist()))
    others = [c for c in np.argsort(-probabilities.max(axis=0), kind="stable") if c not in winners]
    return np.array((winners + others)[: max(max_rows, len(winners))])


def plot_timeline(scores: WindowScores, names: list[str], path: str) -> None:
    """Writes the timeline PNG of `scores` (smoothed when smoothing).

    Each window's probabilities fill the time between the midpoints to its neighbours' centres;
    the title gives the video's length and the window settings.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probabilities = scores.smoothed
    windows = scores.windows
    rows = timeline_rows(probabilities)
    centres = (windows.starts + windows.ends) / 2 / windows.fps
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [scores.duration]])
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.35 * len(rows)))
    mesh = ax.pcolormesh(
        edges,
        np.arange(len(rows) + 1),
        probabilities[:, rows].T,
        cmap="viridis",
        vmin=0,
        vmax=1,
    )
    ax.set_yticks(np.arange(len(rows)) + 0.5, [names[c] for c in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    fig.colorbar(mesh, ax=ax, label="probability", pad=0.01)
    smoothing = f", moving average of {scores.smoothing} windows" if scores.smoothing > 1 else ""
    ax.set_title(
        f"{os.path.basename(scores.path)}: {scores.duration:.1f} s, {len(windows)} windows of "
        f"{scores.window:g} s every {scores.stride:g} s{smoothing}",
        fontsize=10,
    )
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(path, image.getvalue())
