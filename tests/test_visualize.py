"""`tea_jax.visualize` on a briefly trained reduced TEA: the heat map finds the synthetic shape.

The network of `configs/synthetic_tea8.py` is trained in memory for 200 steps, 40% of the main
command's budget (`synthetic_model`, the `trained` fixture of conftest). Its Grad-CAM peak then
overlaps the shape in 72.7% of the validation frames here (chance, a random cell of the 2x2 grid:
53.7%); after 60 steps it was at chance (46.4%), and the model of the main command reaches 80.7%
(docs/inference.md).
"""

import numpy as np
import pytest
import synthetic_model
from synthetic_model import OPTIONS, SIZE, T

from bench.heatmap_hit_rate import chance_hits, object_boxes
from tea_jax import model_files, visualize
from tea_jax.data import synthetic
from tea_jax.data.video import VideoFile, write_video


@pytest.fixture(scope="module")
def untrained():
    """(model, variables, val clips, val labels) at initialisation: no training needed."""
    return synthetic_model.untrained()


@pytest.mark.slow
def test_heat_map_peak_on_the_shape(trained):
    """The heat map finds the shape once the model has learned it: the `trained` fixture's 200
    steps take 5-9 minutes on 2 cores."""
    model, variables, clips, _ = trained
    hits, chance = [], []
    for clip in clips:
        explanation = visualize.explain(model, variables, clip)
        boxes = object_boxes(clip)
        hits.append(visualize.peak_hits(explanation.cam, boxes, SIZE))
        chance.append(chance_hits(boxes, explanation.cam.shape[1:], SIZE))
    rate, chance_rate = np.mean(hits), np.mean(chance)
    print(f"peak on the shape in {100 * rate:.1f}% of frames, chance {100 * chance_rate:.1f}%")
    assert rate >= 0.65 and rate >= chance_rate + 0.1, (rate, chance_rate)


def test_explanation_and_command_line(untrained, tmp_path, user_error):
    """Contributions add up to the logit; `--class` picks the class; the PNG and mp4 are written."""
    model, variables, clips, _ = untrained
    explanation = visualize.explain(model, variables, clips[0], class_index=3)
    assert explanation.class_index == 3 and explanation.cam.shape == (T, 2, 2)
    np.testing.assert_allclose(
        explanation.contributions.sum() + explanation.bias, explanation.logit, rtol=1e-4, atol=1e-5
    )
    assert sorted(explanation.gates) == [1, 2, 3, 4]
    assert all(g.shape == (T,) and np.all(np.abs(g) < 0.5) for g in explanation.gates.values())

    model_files.save_model(
        tmp_path / "model", "tea50", {"num_classes": 8, "num_segments": T, **OPTIONS}, variables
    )
    (tmp_path / "model" / "classes.txt").write_text("\n".join(synthetic.CLASSES) + "\n")
    (tmp_path / "model" / "preprocess.json").write_text('{"image_size": 64, "short_side": 64}')
    write_video(str(tmp_path / "clip.mp4"), clips[1])
    visualize.main(
        [
            str(tmp_path / "clip.mp4"),
            "--checkpoint",
            str(tmp_path / "model"),
            "--output",
            str(tmp_path / "out.png"),
            "--mp4",
            str(tmp_path / "out.mp4"),
            "--class",
            "shrinking",
        ]
    )
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with VideoFile(str(tmp_path / "out.mp4")) as video:
        assert video.num_frames == T
    with user_error("neither a class name nor an index"):
        visualize.main(
            [
                str(tmp_path / "clip.mp4"),
                "--checkpoint",
                str(tmp_path / "model"),
                "--output",
                str(tmp_path / "x.png"),
                "--class",
                "jumping",
            ]
        )
