"""The paper configs: their recipes, and two training steps of fine-tuning on tiny fake data."""

import importlib
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from fast_compile import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAPER_CONFIGS = (
    "kinetics_tea8",
    "kinetics_tea16",
    "sthv1_tea8",
    "sthv1_tea16",
    "sthv2_tea16",
    "ucf101_tea16_ft",
    "hmdb51_tea16_ft",
)
ABLATION_MODELS = (
    "tsn_resnet50",
    "tsn_res2net50",
    "tsm_resnet50",
    "r2plus1d_resnet50",
    "r2plus1d_res2net50",
    "mta50",
    "me50",
    "me_nores50",
    "se50",
    "tea50",
)


def load_config(name, arg=None):
    module = importlib.import_module(f"configs.{name}")
    return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_recipe(name):
    config = load_config(name)
    assert config.model == "tea50"
    assert config.num_segments == (8 if name.endswith("8") else 16)
    assert config.optim.name == "sgd" and config.optim.momentum == 0.9
    assert config.optim.lr_batch_size == 64 and config.optim.clip_norm == 20
    assert (config.optim.bias_lr_mult, config.optim.bn_decay_mult) == (2, 0)
    assert (config.optim.classifier_lr_mult, config.optim.classifier_bias_lr_mult) == (5, 10)
    assert config.init_from
    if name.endswith("_ft"):
        assert config.optim.lr == 0.001 and tuple(config.optim.lr_steps) == (10, 20)
        assert config.num_epochs == 25 and config.model_options.dropout_rate == 0.8
        assert config.model_options.partial_bn and config.optim.weight_decay == 5e-4
    else:
        assert config.num_epochs == 50 and tuple(config.optim.lr_steps) == (30, 40, 45)
        assert config.model_options.dropout_rate == 0.5 and not config.model_options.partial_bn
        sth = name.startswith("sth")
        assert config.optim.lr == (0.02 if sth else 0.01)
        assert config.optim.weight_decay == (5e-4 if sth else 1e-4)
        assert config.data.flip == (not sth)
    expected_classes = {"kin": 400, "sth": 174, "ucf": 101, "hmd": 51}[name[:3]]
    assert config.data.num_classes == expected_classes


@pytest.mark.parametrize("model", ABLATION_MODELS)
def test_ablation_configs_build_their_model_and_optimizer(model):
    from tea_jax.train import model_setup, optim

    config = load_config("sthv1_ablation", model)
    net = model_setup.build_model(config, config.data.num_classes)
    video = jax.ShapeDtypeStruct((1, config.num_segments, 32, 32, 3), jnp.float32)
    key = jax.random.key(0)
    shapes = jax.eval_shape(
        lambda v: net.init({"params": key, "dropout": key}, v, train=False), video
    )
    counts = optim.count_groups(optim.param_groups(shapes["params"]))
    assert counts["fc_weight"] == counts["fc_bias"] == 1 and counts["bn"] > 0
    assert shapes["params"]["fc"]["kernel"].shape[-1] == 174
    with pytest.raises(ValueError, match="Unknown ablation model"):
        load_config("sthv1_ablation", "tea101")


def test_synthetic_configs():
    tea, tsn = load_config("synthetic_tea8"), load_config("synthetic_tsn8")
    assert (tea.model, tsn.model) == ("tea50", "tsn_res2net50")
    for config in (tea, tsn):
        assert config.data.source == "synthetic" and config.data.image_size == 64
        assert tuple(config.model_options.stage_sizes) == (1, 1, 1, 1)
        assert config.model_options.width_multiplier == 0.25 and config.num_segments == 8


def _flat(config, prefix=""):
    items = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            items.update(_flat(value, f"{prefix}{key}."))
        else:
            items[prefix + key] = value
    return items


@pytest.mark.parametrize("task", ["clutter", "order"])
def test_synthetic_task_configs_keep_the_skeleton_recipe_and_budget(task):
    base = _flat(load_config("synthetic_tea8", "mta50"))
    config = _flat(load_config(f"synthetic_{task}", "mta50"))
    differences = {k for k in base.keys() | config.keys() if base.get(k) != config.get(k)}
    expected = {"data.root", "data.synthetic.task", "model_options.stage_sizes"}
    expected |= {"data.synthetic.size", "data.image_size", "data.short_side"}
    if task == "order":
        expected |= {"num_segments", "model_options.temporal_stages"}
    assert differences == expected
    assert config["data.synthetic.task"] == task and config["model"] == "mta50"


def shrink(config, init_from=""):
    """The config on a one-block-per-stage network, 32x32 fake clips of 2 frames, 2 steps."""
    import ml_collections

    config.num_segments = 2
    config.model_options.update(stage_sizes=(1, 1, 1, 1), width_multiplier=0.25)
    config.data = ml_collections.ConfigDict(
        {"image_size": 32, "num_train": 8, "num_val": 4, "test_clips": 1, "test_crops": 1}
    )
    config.init_from = init_from
    config.batch_size = config.eval_batch_size = 4
    config.bn_group_clips = 2
    config.total_steps = 2
    config.log_every_steps = 1
    config.optim.lr *= 100  # Makes the two steps' updates visible in float32 weights.
    return config


# Configs that differ from these only in data location, class count and frames run the same
# program on the tiny fake data (test_families_differ_only_in_dataset).
FAMILIES = {
    "kinetics_tea16": ("kinetics_tea8",),
    "sthv1_tea8": ("sthv1_tea16", "sthv2_tea16"),
    "ucf101_tea16_ft": ("hmdb51_tea16_ft",),
}
# Something-Something's recipe differs from Kinetics' only in three numbers (lr, weight decay,
# flip). test_datasets_e2e trains every family's representative for two steps with train.py,
# without pretrained weights; here the fine-tuning recipe starts from a checkpoint of another
# class count and keeps all BatchNorm statistics but the stem's (partial BatchNorm).
TRAINED = ("ucf101_tea16_ft",)
DATASET_KEYS = {"num_segments", "data.root", "data.train_list", "data.val_list", "data.template"}


def _differing_keys(name, other_name):
    def flat(config):
        out = {}
        for key, value in config.items():
            if hasattr(value, "items"):
                out.update({f"{key}.{k}": v for k, v in flat(value).items()})
            else:
                out[key] = value
        return out

    a, b = flat(load_config(name)), flat(load_config(other_name))
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@pytest.mark.parametrize("representative", sorted(FAMILIES))
def test_families_differ_only_in_dataset(representative):
    for name in FAMILIES[representative]:
        differing = _differing_keys(representative, name)
        assert differing <= DATASET_KEYS | {"data.num_classes"}, (name, differing)


def test_something_recipe_differs_from_kinetics_in_three_numbers():
    differing = _differing_keys("kinetics_tea8", "sthv1_tea8") - DATASET_KEYS
    assert differing == {"data.num_classes", "optim.lr", "optim.weight_decay", "data.flip"}


def test_paper_configs_run_steps(tmp_path):
    """Two training steps of the fine-tuning recipe (`TRAINED`) on a reduced network, in a
    subprocess: 30 s on a 2-core machine, up to 80 s when it is loaded, nearly all of it compiling
    the step with the recipe's parameter groups, partial BatchNorm and dropout.
    """
    env = cpu_env(PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert sorted(results) == sorted(TRAINED)
    for name, result in results.items():
        assert len(result["losses"]) == 2 and all(map(math.isfinite, result["losses"])), name
        assert 0 <= result["top1"] <= 1, name
    frozen = results["ucf101_tea16_ft"]["partial_bn"]
    assert frozen["stem_bn_changed"] and frozen["convs_changed"]
    assert frozen["other_bn_unchanged"] and frozen["other_bn_params_unchanged"]


def _compare_partial_bn(init, trained):
    """Which BatchNorm statistics/parameters moved between two variable trees."""
    import flax
    import numpy as np

    def flat(tree):
        return flax.traverse_util.flatten_dict(tree, sep="/")

    stats0, stats1 = flat(init["batch_stats"]), flat(trained["batch_stats"])
    params0, params1 = flat(init["params"]), flat(trained["params"])
    bn_params = [k for k in params0 if k.rsplit("/", 2)[-2].startswith(("bn", "downsample_bn"))]
    return {
        "stem_bn_changed": not np.array_equal(stats0["bn1/mean"], stats1["bn1/mean"]),
        "other_bn_unchanged": all(
            np.array_equal(stats0[k], stats1[k]) for k in stats0 if not k.startswith("bn1/")
        ),
        "other_bn_params_unchanged": all(
            np.array_equal(params0[k], params1[k]) for k in bn_params if not k.startswith("bn1/")
        ),
        "convs_changed": not np.array_equal(
            params0["layer1_0/conv1/kernel"], params1["layer1_0/conv1/kernel"]
        ),
    }


def _main(outdir):
    """Subprocess: two training steps and an evaluation of each config of ``TRAINED``."""
    import fake_loader
    import numpy as np

    import tea_jax
    from tea_jax.model_files import abstract_variables, read_variables, save_model
    from tea_jax.train import reporting, trainer

    # A "Kinetics" checkpoint with another class count, to fine-tune from.
    source = dict(num_classes=10, num_segments=2, stage_sizes=(1, 1, 1, 1), width_multiplier=0.25)
    shapes = abstract_variables(tea_jax.create_model("tea50", **source), num_segments=2)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(s.dtype), shapes)
    variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])
    pretrained = os.path.join(outdir, "pretrained")
    save_model(pretrained, "tea50", source, variables)

    results = {}
    for name in TRAINED:
        config = shrink(load_config(name), init_from=pretrained)
        workdir = os.path.join(outdir, name)
        val = trainer.train_and_evaluate(config, workdir, create_loader=fake_loader.create_loader)
        train = [r for r in reporting.read_metrics(workdir) if r["split"] == "train"]
        results[name] = {"losses": [r["loss"] for r in train], "top1": val["top1"]}
        if config.model_options.partial_bn:
            trained = read_variables(os.path.join(workdir, "model"))
            results[name]["partial_bn"] = _compare_partial_bn(read_variables(pretrained), trained)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    _main(sys.argv[1])
