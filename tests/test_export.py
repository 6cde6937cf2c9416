"""`tea_jax.export`: the serialized inference function matches `model.apply`, on JAX alone."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tea_jax
from tea_jax import export, model_files
from tea_jax.data.normalization import normalize
from tea_jax.inference import CLASSES_FILE, PREPROCESS_FILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
CLASSES = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A reduced TEA checkpoint with random weights and the files `train.py` writes beside it."""
    directory = tmp_path_factory.mktemp("export") / "model"
    options = {
        "num_classes": len(CLASSES),
        "num_segments": 4,
        "stage_sizes": (1, 1, 1, 1),
        "width_multiplier": 0.25,
    }
    model = tea_jax.create_model("tea50", **options)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4, SIZE, SIZE, 3)))
    # Non-trivial BatchNorm statistics, so that a wrong normalisation shows in the logits.
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda x: x + 0.1 * rng.uniform(size=x.shape), variables)
    model_files.save_model(directory, "tea50", options, variables)
    (directory / PREPROCESS_FILE).write_text(json.dumps({"image_size": SIZE, "short_side": 36}))
    (directory / CLASSES_FILE).write_text("\n".join(CLASSES) + "\n")
    return directory


def _logits(model, variables, video):
    return np.asarray(jax.jit(lambda v, x: model.apply(v, normalize(x)))(variables, video))


def _videos(n, t=4):
    return np.random.default_rng(n).integers(0, 256, (n, t, SIZE, SIZE, 3), dtype=np.uint8)


def test_round_trip_and_platforms(model_dir, tmp_path):
    output = tmp_path / "tea.jax"
    export.main(["--checkpoint", str(model_dir), "--output", str(output)])
    description = json.loads((tmp_path / "tea.jax.json").read_text())
    assert description["platforms"] == ["cpu", "cuda", "tpu"]
    assert description["classes"] == CLASSES
    assert description["input"]["shape"] == ["N", 4, SIZE, SIZE, 3]
    assert (description["image_size"], description["short_side"]) == (SIZE, 36)

    exported = jax.export.deserialize(output.read_bytes())
    assert exported.platforms == ("cpu", "cuda", "tpu")
    model, variables = model_files.load_model(model_dir)
    for n in (1, 3):
        video = _videos(n)
        expected = _logits(model, variables, video)
        actual = np.asarray(exported.call(video))
        assert actual.shape == (n, len(CLASSES)) and actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_loads_without_tea_jax_and_flax(model_dir, tmp_path):
    """The file runs in a process where tea_jax and Flax cannot be imported.

    Slow tier: a subprocess of its own; the default tier has the export's round trip."""
    output = tmp_path / "tea.jax"
    argv = [
        "--checkpoint",
        model_dir,
        "--output",
        output,
        "--platforms",
        "cpu",
        "--num-segments",
        6,
    ]
    export.main([str(a) for a in argv])
    video = _videos(2, t=6)
    np.save(tmp_path / "video.npy", video)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["flax"] = sys.modules["tea_jax"] = None  # Any import of them fails.
        import jax
        import numpy as np
        exported = jax.export.deserialize(open({str(output)!r}, "rb").read())
        video = np.load({str(tmp_path / "video.npy")!r})
        np.save({str(tmp_path / "logits.npy")!r}, exported.call(video))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    model, variables = model_files.load_model(model_dir)
    expected = _logits(model.clone(num_segments=6), variables, video)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


def test_bad_arguments(model_dir, tmp_path, user_error):
    with user_error("expected one or more of cpu, cuda, rocm, tpu"):
        export.main(
            ["--checkpoint", str(model_dir), "--output", str(tmp_path / "x"), "--platforms", "gpu"]
        )
    with user_error("not a tea_jax model checkpoint"):
        export.main(["--checkpoint", str(tmp_path), "--output", str(tmp_path / "x")])
