"""PyTorch -> JAX conversion: layouts, logit parity with the PyTorch reference, error paths.

The PyTorch models of `torch_reference` get random weights and BatchNorm statistics from a
training-mode pass, are saved as the released files are (bare ImageNet state dicts; the TEA
training checkpoint dict around `nn.DataParallel(TSN)`), converted with the command line entry
point, and compared with the converted model in eval mode.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tea_jax  # noqa: E402
from tea_jax import convert, model_files  # noqa: E402
from tests import torch_reference as tr  # noqa: E402

# State-dict layouts (key, shape, dtype) of the released Res2Net-50 and TEA models.
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "pytorch_state_dicts.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Blocks per stage with a non-first block in stages 1 and 4 (exercises the MTA cascade), and
# widths 10/64 of the full ones: every Res2Net fragment width stays even, as the released
# temporal shift requires (4, 8, 16, 32 channels).
REDUCED = {"stage_sizes": (2, 1, 1, 2), "stem_width": 10, "planes": (10, 20, 40, 80)}
REDUCED_OPTIONS = {"stage_sizes": (2, 1, 1, 2), "width_multiplier": 10 / 64}
SIZE = 64
TOLERANCE = 1e-3  # Of the largest logit.


def run_convert(kind, source, output, *extra):
    """Runs the command line entry point."""
    convert.main([kind, "--input", str(source), "--output", str(output), *map(str, extra)])


def _layout(state_dict):
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state_dict.items()]


def _calibrated(model, inputs, seed=0):
    if seed is not None:
        tr.randomize_(model, seed)
    tr.calibrate_batch_norm_(model, inputs)
    with torch.no_grad():
        return model, model(inputs).numpy()


def _videos(n, t, seed):
    return torch.randn((n, t, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


def _nhwc(x):
    return jnp.asarray(np.moveaxis(x.numpy(), -3, -1))


def save_tea_checkpoint(path, num_segments, num_classes=7, seed=0, **arch):
    """Saves a random TEA model as the released training code does, after one SGD step with the
    learning rates of its `adjust_learning_rate`; returns (video, logits)."""
    model = tr.tea50(num_classes, num_segments, **(arch or REDUCED))
    video = _videos(2, num_segments, seed + 1)
    tr.randomize_(model, seed)
    wrapped = torch.nn.DataParallel(model)
    optimizer = torch.optim.SGD(tr.optim_policies(model), 0.001, momentum=0.9, weight_decay=5e-4)
    tr.adjust_learning_rate(optimizer, 12, lr=0.001, weight_decay=5e-4, lr_steps=(10, 20))
    torch.nn.functional.cross_entropy(wrapped(video), torch.tensor([0, 1])).backward()
    optimizer.step()
    model, logits = _calibrated(model, video, seed=None)
    tr.save_checkpoint(path, wrapped, optimizer, epoch=12, best_prec1=12.5)
    return video, logits


def _logits(directory, video):
    model, variables = model_files.load_model(directory)
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, video))


def assert_close_logits(actual, expected):
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0.1  # Informative logits, not a collapsed network.
    np.testing.assert_array_less(np.abs(actual - expected).max(), TOLERANCE * scale)


@pytest.fixture(scope="module")
def tea8(tmp_path_factory):
    """A converted reduced TEA checkpoint with 8 segments: (directory, video, torch logits)."""
    root = tmp_path_factory.mktemp("tea8")
    video, logits = save_tea_checkpoint(root / "ckpt.best.pth.tar", 8)
    run_convert("tea", root / "ckpt.best.pth.tar", root / "jax", "--num-segments", 8)
    return root / "jax", video, logits


@pytest.fixture(scope="module")
def res2net_file(tmp_path_factory):
    """A reduced Res2Net ImageNet state dict in the legacy (non-zip) format.

    Returns:
      (path, images, logits).
    """
    path = tmp_path_factory.mktemp("res2net") / "res2net50_26w_4s.pth"
    images = torch.randn((3, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    model, logits = _calibrated(tr.res2net50(num_classes=11, **REDUCED), images, seed=2)
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    return path, images, logits


def test_reference_reproduces_released_layouts():
    with open(REFERENCE) as f:
        released = json.load(f)
    assert _layout(tr.res2net50().state_dict()) == released["res2net50_26w_4s_imagenet"]
    assert _layout(tr.tea50_backbone().state_dict()) == released["tea50_backbone"]
    wrapped = list(torch.nn.DataParallel(tr.tea50(400, 8)).state_dict())
    backbone = [k for k, _, _ in released["tea50_backbone"] if not k.startswith("fc.")]
    assert wrapped == [f"module.base_model.{k}" for k in backbone] + [
        "module.new_fc.weight",
        "module.new_fc.bias",
    ]
    count = sum(p.numel() for p in tr.tea50_backbone().parameters())
    assert count == 26_148_754
    assert sum(p.numel() for p in tr.res2net50().parameters()) == 25_699_120


def test_tea_parity_8_frames(tea8):
    directory, video, logits = tea8
    with open(directory / model_files.MODEL_FILE) as f:
        info = json.load(f)
    assert info == {
        "name": "tea50",
        "options": {
            "num_classes": 7,
            "num_segments": 8,
            "stage_sizes": [2, 1, 1, 2],
            "width_multiplier": 10 / 64,
            "variant": "reference",
        },
    }
    assert_close_logits(_logits(directory, _nhwc(video)), logits)


def test_tea_parity_16_frames_bare_state_dict(tmp_path):
    """T=16 from the bare state dict without `module.` (also accepted)."""
    video, logits = save_tea_checkpoint(tmp_path / "wrapped.pth", 16, seed=4)
    state = torch.load(tmp_path / "wrapped.pth", weights_only=False)["state_dict"]  # ours
    torch.save({k.removeprefix("module."): v for k, v in state.items()}, tmp_path / "bare.pth")
    run_convert("tea", tmp_path / "bare.pth", tmp_path / "jax", "--num-segments", 16)
    assert_close_logits(_logits(tmp_path / "jax", _nhwc(video)), logits)


def test_load_model_without_torch(tea8):
    """A converted checkpoint loads and runs where PyTorch cannot be imported.

    Reading a .pth file there fails with a message saying what to install.
    """
    directory, video, logits = tea8
    np.save(directory.parent / "video.npy", np.moveaxis(video.numpy(), -3, -1))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # Any import of torch fails.
        import jax
        import numpy as np
        import tea_jax
        model, variables = tea_jax.load_model({str(directory)!r})
        video = np.load({str(directory.parent / "video.npy")!r})
        logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, video)
        np.save({str(directory.parent / "logits.npy")!r}, logits)
        assert sys.modules["torch"] is None
        from tea_jax import convert
        try:
            convert.read_state_dict({str(directory.parent / "ckpt.best.pth.tar")!r})
        except convert.ConversionError as e:
            assert "needs PyTorch" in str(e), e
        else:
            raise AssertionError("read a .pth file without PyTorch")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=300)
    assert_close_logits(np.load(directory.parent / "logits.npy"), logits)


def _assert_same_variables(actual_dir, expected_dir):
    actual = jax.tree.leaves_with_path(model_files.read_variables(actual_dir))
    expected = jax.tree.leaves_with_path(model_files.read_variables(expected_dir))
    assert [p for p, _ in actual] == [p for p, _ in expected]
    for (path, a), (_, e) in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype, path
        np.testing.assert_array_equal(a, e, err_msg=str(path))


def test_tea_from_safetensors_without_torch(tea8, tmp_path):
    """The training checkpoint's state dict as safetensors converts where torch cannot be imported.

    The variables equal those converted from the .pth file, and a .pth file there fails with a
    message naming the safetensors route.
    """
    from safetensors.numpy import save_file

    directory, _, _ = tea8
    pth = directory.parent / "ckpt.best.pth.tar"
    save_file(convert.read_state_dict(pth), tmp_path / "tea.safetensors")  # as the error says
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # Any import of torch fails.
        from tea_jax import convert
        convert.main(["tea", "--input", {str(tmp_path / "tea.safetensors")!r},
                      "--output", {str(tmp_path / "jax")!r}, "--num-segments", "8"])
        try:
            convert.read_state_dict({str(pth)!r})
        except convert.ConversionError as e:
            assert "needs PyTorch" in str(e) and "safetensors" in str(e), e
        else:
            raise AssertionError("read a .pth file without PyTorch")
        assert sys.modules["torch"] is None
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=300)
    _assert_same_variables(tmp_path / "jax", directory)


@pytest.mark.parametrize("prefix", ["", "model."])
def test_res2net50_from_safetensors(res2net_file, tmp_path, prefix):
    """timm's hub files use the Res2Net key names; a `model.` wrapper prefix is removed."""
    from safetensors.numpy import save_file

    path, _, _ = res2net_file
    state = torch.load(path, weights_only=True)
    save_file({prefix + k: v.numpy() for k, v in state.items()}, tmp_path / "model.safetensors")
    run_convert("res2net50", tmp_path / "model.safetensors", tmp_path / "from_safetensors")
    run_convert("res2net50", path, tmp_path / "from_pth")
    _assert_same_variables(tmp_path / "from_safetensors", tmp_path / "from_pth")


def test_resnet50_from_bfloat16_safetensors(tmp_path):
    """Half-precision files are read (bfloat16 through ml_dtypes) and stored as float32."""
    from safetensors.torch import save_file

    model = tr.resnet50(num_classes=9, **REDUCED)
    tr.randomize_(model, 7)
    state = {k: v.bfloat16() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    torch.save(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
        tmp_path / "model.pth",
    )
    run_convert("resnet50", tmp_path / "model.safetensors", tmp_path / "from_safetensors")
    run_convert("resnet50", tmp_path / "model.pth", tmp_path / "from_pth")
    _assert_same_variables(tmp_path / "from_safetensors", tmp_path / "from_pth")


def test_truncated_safetensors(res2net_file, tmp_path, capsys):
    from safetensors.numpy import save_file

    path, _, _ = res2net_file
    state = torch.load(path, weights_only=True)
    save_file({k: v.numpy() for k, v in state.items()}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    _fails(
        ["res2net50", "--input", tmp_path / "cut.safetensors", "--output", tmp_path / "out"],
        capsys,
        str(tmp_path / "cut.safetensors"),
        "not a readable safetensors file",
    )


def test_res2net50_imagenet_parity(res2net_file, tmp_path):
    path, images, logits = res2net_file
    run_convert("res2net50", path, tmp_path / "jax")
    model, variables = model_files.load_model(tmp_path / "jax", num_classes=11, num_segments=1)
    assert model.num_segments == 1
    assert_close_logits(np.asarray(model.apply(variables, _nhwc(images)[:, None])), logits)


def test_resnet50_imagenet_parity(tmp_path):
    """torchvision layout, saved without `num_batches_tracked` (older files lack it)."""
    images = torch.randn((3, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(5))
    model, logits = _calibrated(tr.resnet50(num_classes=9, **REDUCED), images, seed=6)
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "resnet50.pth")
    run_convert("resnet50", tmp_path / "resnet50.pth", tmp_path / "jax")
    model, variables = model_files.load_model(tmp_path / "jax")
    assert_close_logits(np.asarray(model.apply(variables, _nhwc(images)[:, None])), logits)


def test_init_tea50_from_converted_res2net(res2net_file, tmp_path, capsys):
    path, _, _ = res2net_file
    run_convert("res2net50", path, tmp_path / "imagenet")
    model = tea_jax.create_model("tea50", num_classes=5, num_segments=8, **REDUCED_OPTIONS)
    fresh = jax.tree.map(
        lambda s: np.random.default_rng(0).normal(size=s.shape).astype(s.dtype),
        model_files.abstract_variables(model, 8),
    )
    variables, summary = model_files.init_from(fresh, tmp_path / "imagenet", model_name="tea50")
    printed = capsys.readouterr().out
    assert "new (left at initialisation)" in printed and "layer*/me/conv_reduce" in printed

    imagenet = model_files.read_variables(tmp_path / "imagenet")
    new_modules = {p.split("/")[2] for p in summary.new if p.startswith("params/layer")}
    assert new_modules == {"me"} | {"mta"}  # ME and the temporal convs of MTA.
    assert {p for p in summary.new if "/mta/" in p} == {
        f"params/{block}/mta/temporal_{i}/kernel"
        for block in ("layer1_0", "layer1_1", "layer2_0", "layer3_0", "layer4_0", "layer4_1")
        for i in range(4)
    }
    assert set(summary.dropped) == {"params/fc/kernel", "params/fc/bias"}
    assert {"params/fc/kernel", "params/fc/bias"} <= set(summary.new)
    np.testing.assert_array_equal(
        variables["params"]["layer2_0"]["mta"]["conv_1"]["kernel"],
        imagenet["params"]["layer2_0"]["mta"]["conv_1"]["kernel"],
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer4_1"]["bn3"]["var"],
        imagenet["batch_stats"]["layer4_1"]["bn3"]["var"],
    )
    np.testing.assert_array_equal(
        variables["params"]["layer1_0"]["me"]["conv_reduce"]["kernel"],
        fresh["params"]["layer1_0"]["me"]["conv_reduce"]["kernel"],
    )
    assert len(summary.loaded) + len(summary.new) == len(jax.tree.leaves(fresh))


def test_training_batch_norm_matches_released_data_parallel(tmp_path):
    """A training-mode pass of 16 clips with `bn_group_clips=8` against the released TEA run as
    `DataParallel` runs it on two GPUs: each replica normalises its 8 clips. The logits match,
    and so does every running statistic, against the mean of the two replicas' (DataParallel
    keeps the first's). The batch statistic implied by each running variance, `(new - 0.9 old)
    / 0.1`, is the unbiased one: 3% above the biased one for ME's pooled `bn_expand`, which
    sees 8 clips x 4 frames per channel."""
    import copy

    t = 4
    model = tr.tea50(7, t, dropout=0.0, **REDUCED)
    tr.randomize_(model, seed=5)
    tr.calibrate_batch_norm_(model, _videos(4, t, seed=6))
    torch.save(model.state_dict(), tmp_path / "before.pth")
    video = _videos(16, t, seed=7) * torch.linspace(0.5, 2.0, 16).reshape(16, 1, 1, 1, 1)
    replicas = [copy.deepcopy(model).train() for _ in range(2)]
    with torch.no_grad():
        logits = torch.cat([r(part) for r, part in zip(replicas, video.split(8), strict=True)])
        averaged = {
            k: (v + replicas[1].state_dict()[k]) / 2 if "running" in k else v
            for k, v in replicas[0].state_dict().items()
        }
    torch.save(averaged, tmp_path / "after.pth")
    for name in ("before", "after"):
        run_convert("tea", tmp_path / f"{name}.pth", tmp_path / name, "--num-segments", t)

    _, options = model_files.read_model_info(tmp_path / "before")
    ours = tea_jax.create_model("tea50", **options, bn_group_clips=8, dropout_rate=0.0)
    before = model_files.read_variables(tmp_path / "before")
    apply = jax.jit(lambda v, x: ours.apply(v, x, train=True, mutable=["batch_stats"]))
    actual, updates = apply(before, _nhwc(video))
    assert_close_logits(np.asarray(actual), logits.numpy())

    def implied(stats):  # the batch statistics each running statistic moved towards
        return jax.tree.map(lambda new, old: (new - 0.9 * old) / 0.1, stats, before["batch_stats"])

    expected = implied(model_files.read_variables(tmp_path / "after")["batch_stats"])
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=2e-3, atol=2e-4),
        implied(updates["batch_stats"]),
        expected,
    )
    bn_expand = expected["layer1_0"]["me"]["bn_expand"]["var"]
    biased = implied(updates["batch_stats"])["layer1_0"]["me"]["bn_expand"]["var"] * 31 / 32
    assert np.abs(biased / bn_expand - 1).max() > 0.02


@pytest.mark.slow
def test_tea_parity_full_size(tmp_path):
    arch = {"stage_sizes": tr.FULL_STAGE_SIZES, "stem_width": 64, "planes": tr.FULL_PLANES}
    video, logits = save_tea_checkpoint(tmp_path / "full.pth.tar", 8, num_classes=400, **arch)
    run_convert("tea", tmp_path / "full.pth.tar", tmp_path / "jax", "--num-segments", 8)
    with open(tmp_path / "jax" / model_files.MODEL_FILE) as f:
        assert json.load(f)["options"] == {
            "num_classes": 400,
            "num_segments": 8,
            "variant": "reference",
        }
    assert_close_logits(_logits(tmp_path / "jax", _nhwc(video)), logits)


# Error paths.


def _fails(argv, capsys, *fragments):
    with pytest.raises(SystemExit) as exit_info:
        convert.main([str(a) for a in argv])
    assert exit_info.value.code != 0
    message = str(exit_info.value.code) + capsys.readouterr().err
    for fragment in fragments:
        assert fragment in message, message


def test_truncated_file(res2net_file, tmp_path, capsys):
    path, _, _ = res2net_file
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _fails(
        ["res2net50", "--input", tmp_path / "cut.pth", "--output", tmp_path / "out"],
        capsys,
        str(tmp_path / "cut.pth"),
        "truncated or corrupted",
    )
    assert not (tmp_path / "out").exists()


def test_released_checkpoint_holds_numpy_learning_rates(tea8):
    """`adjust_learning_rate` leaves NumPy float64 learning rates in the optimizer state that
    `save_checkpoint` stores: PyTorch's `weights_only` loading alone refuses the file, the
    converter reads it (tea8 converted it) and its optimizer state is as saved."""
    path = tea8[0].parent / "ckpt.best.pth.tar"
    with pytest.raises(Exception, match=r"numpy\._core\.multiarray\.scalar"):
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals(convert._numpy_float64_globals()):
        checkpoint = torch.load(path, weights_only=True)
    assert sorted(checkpoint) == ["arch", "best_prec1", "epoch", "optimizer", "state_dict"]
    lrs = {g["name"]: g["lr"] for g in checkpoint["optimizer"]["param_groups"]}
    assert type(lrs["lr5_weight"]) is np.float64 and lrs["lr5_weight"] == pytest.approx(5e-4)


def test_checkpoint_written_with_numpy_1(tea8, tmp_path):
    """NumPy 1 pickles the scalar reconstructor as `numpy.core.multiarray.scalar`, as in the
    released checkpoints. (A legacy-format file keeps its pickle apart from the tensor data,
    so the global's name can be rewritten in place.)"""
    directory, video, logits = tea8
    checkpoint = torch.load(directory.parent / "ckpt.best.pth.tar", weights_only=False)  # ours
    torch.save(checkpoint, tmp_path / "new.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "new.pth").read_bytes()
    assert data.count(b"numpy._core.multiarray") == 1
    (tmp_path / "old.pth").write_bytes(
        data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    )
    run_convert("tea", tmp_path / "old.pth", tmp_path / "jax", "--num-segments", 8)
    assert_close_logits(_logits(tmp_path / "jax", _nhwc(video)), logits)


@pytest.mark.parametrize(
    "obj,name",
    [
        (argparse.Namespace(lr=0.01), "argparse.Namespace"),  # argparse options beside weights
        (np.float32(0.01), "numpy.dtypes.Float32DType"),
        (np.arange(3.0), "numpy._core.multiarray._reconstruct"),
    ],
)
def test_file_needing_arbitrary_unpickling(tmp_path, capsys, obj, name):
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "args": obj}, tmp_path / "a.pth")
    with pytest.raises(SystemExit) as exit_info:
        run_convert("tea", tmp_path / "a.pth", tmp_path / "out", "--num-segments", 8)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {tmp_path / 'a.pth'} holds {name}, which is not")
    assert "weights_only=False" in message and "\n" not in message.rstrip("\n")


def test_missing_file_and_missing_num_segments(tmp_path, capsys):
    _fails(
        ["res2net50", "--input", tmp_path / "none.pth", "--output", tmp_path],
        capsys,
        "no such file",
    )
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "x.pth")
    _fails(
        ["tea", "--input", tmp_path / "x.pth", "--output", tmp_path / "o"], capsys, "--num-segments"
    )
    _fails(
        [
            "res2net50",
            "--input",
            tmp_path / "x.pth",
            "--output",
            tmp_path / "o",
            "--num-segments",
            8,
        ],
        capsys,
        "tea` only",
    )


def test_other_architecture(res2net_file, tea8, tmp_path, capsys):
    res2net, _, _ = res2net_file
    _fails(
        ["resnet50", "--input", res2net, "--output", tmp_path / "a"],
        capsys,
        "does not convert to tsn_resnet50",
        "a Res2Net backbone without temporal modules",
    )
    _fails(
        ["tea", "--input", res2net, "--output", tmp_path / "b", "--num-segments", 8],
        capsys,
        "does not convert to tea50",
        "me/conv_reduce",
        "not in the file",
    )
    tea_file = tea8[0].parent / "ckpt.best.pth.tar"
    _fails(
        ["res2net50", "--input", tea_file, "--output", tmp_path / "c"],
        capsys,
        "with Motion Excitation and temporal convs",
        "tsn_res2net50 has no",
    )
    assert not any((tmp_path / d).exists() for d in "abc")


def test_unknown_and_missing_keys(res2net_file, tmp_path, capsys):
    path, _, _ = res2net_file
    state = torch.load(path, weights_only=True)
    torch.save({**state, "layer1.0.extra.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    _fails(
        ["res2net50", "--input", tmp_path / "extra.pth", "--output", tmp_path / "a"],
        capsys,
        "layer1.0.extra.weight (3,): not a known key",
    )
    del state["layer3.0.bns.2.running_var"]
    torch.save(state, tmp_path / "missing.pth")
    _fails(
        ["res2net50", "--input", tmp_path / "missing.pth", "--output", tmp_path / "b"],
        capsys,
        "batch_stats/layer3_0/mta/bn_2/var (16,): not in the file",
    )


def test_wrong_segments_or_classes_at_load(tea8, tmp_path):
    directory, _, _ = tea8
    with pytest.raises(ValueError, match="num_segments=8, but num_segments=16 was requested"):
        model_files.load_model(directory, num_segments=16)
    with pytest.raises(ValueError, match="num_classes=7, but num_classes=400 was requested"):
        model_files.load_model(directory, num_classes=400)
    model, variables = model_files.load_model(directory)
    with pytest.raises(ValueError, match="num_segments=8"):
        model.apply(variables, jnp.zeros((1, 16, SIZE, SIZE, 3)))

    edited = tmp_path / "edited"
    edited.mkdir()
    os.symlink(directory / model_files.VARIABLES_DIR, edited / model_files.VARIABLES_DIR)
    info = json.loads((directory / model_files.MODEL_FILE).read_text())
    info["options"]["num_classes"] = 400
    (edited / model_files.MODEL_FILE).write_text(json.dumps(info))
    with pytest.raises(
        ValueError, match=r"shape of params/fc/kernel: \(320, 7\), model expects \(320, 400\)"
    ):
        model_files.load_model(edited)


def test_refuses_to_overwrite(res2net_file, tmp_path, capsys):
    path, _, _ = res2net_file
    run_convert("res2net50", path, tmp_path)
    _fails(["res2net50", "--input", path, "--output", tmp_path], capsys, "refusing to overwrite")
