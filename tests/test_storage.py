"""Paths as URLs: run outputs and model checkpoints in a bucket of a Cloud Storage API on
localhost (fake-gcs-server), sources that cannot read a URL, and the one module that owns paths.
"""

import ast
import logging
import pathlib
import time

import jax
import ml_collections
import numpy as np
import pytest
from test_model_files import assert_trees_equal, random_variables

from tea_jax import data, model_files, storage
from tea_jax.train import reporting, trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_files_and_folders_in_a_bucket(gcs, caplog):
    run = f"{gcs.bucket()}/run"
    storage.makedirs(run)
    storage.write_text(storage.join(run, "a.txt"), "one\n")
    storage.append_text(storage.join(run, "a.txt"), "two\n")
    assert storage.read_text(storage.join(run, "a.txt")) == "one\ntwo\n"
    storage.write_bytes(storage.join(run, "sub", "x.bin"), b"\x00\x01")
    assert storage.listdir(run) == ["a.txt", "sub"]
    assert storage.isdir(storage.join(run, "sub")) and storage.isfile(storage.join(run, "a.txt"))
    storage.rename(storage.join(run, "sub"), storage.join(run, "moved"))
    assert storage.listdir(run) == ["a.txt", "moved"]
    assert storage.read_bytes(storage.join(run, "moved", "x.bin")) == b"\x00\x01"
    storage.rmtree(storage.join(run, "moved"))
    assert storage.listdir(run) == ["a.txt"]
    assert storage.listdir(storage.join(run, "missing")) == []
    assert gcs.files(run) == ["run/a.txt"]
    assert not [r for r in caplog.records if r.name.startswith("gcsfs")], caplog.records


def test_run_outputs_go_to_the_bucket(gcs):
    run = f"{gcs.bucket()}/run"
    trainer.check_workdir(run)
    reporting.save_config(ml_collections.ConfigDict({"a": 1}), run)
    writer = reporting.MetricWriter(run)
    writer.write(1, "train", {"loss": 2.0})
    writer.write(2, "val", {"loss": 1.0, "top1": 0.5})
    writer.close()
    assert [r["step"] for r in reporting.read_metrics(run)] == [1, 2]
    reporting.plot_curves(run)
    files = gcs.files(run)
    assert {"run/config.json", "run/metrics.jsonl", "run/curves.png"} <= set(files), files
    assert any(f.startswith("run/tensorboard/events.out.tfevents") for f in files), files
    assert not any(".write_test" in f for f in files)


def test_profile_trace_is_copied_to_the_bucket(gcs):
    run = f"{gcs.bucket()}/run"
    profiler = reporting.StepProfiler(run, "1,1", enabled=True)
    profiler.before_step(1)
    profiler.after_step(1, jax.numpy.ones(4) * 2)
    files = gcs.files(run)
    assert any(f.startswith("run/profile/plugins/profile/") for f in files), files
    assert any(f.endswith(".xplane.pb") for f in files), files


def test_a_writer_of_local_files_publishes_to_the_bucket(gcs):
    target = f"{gcs.bucket()}/out/video.mp4"
    with storage.local_file(target) as local:
        assert not storage.is_url(local)
        pathlib.Path(local).write_bytes(b"abc")
    assert storage.read_bytes(target) == b"abc"


def test_model_round_trip_in_a_bucket(gcs):
    options, variables = random_variables("tea50")
    model = f"{gcs.bucket()}/models/tea"
    model_files.save_model(model, "tea50", options, variables)
    assert "models/tea/model.json" in gcs.files(model)
    loaded_model, loaded = model_files.load_model(model)
    assert loaded_model.num_classes == options["num_classes"]
    assert_trees_equal(jax.tree.map(np.asarray, loaded), variables)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        model_files.save_model(model, "tea50", options, variables)


def test_missing_bucket_is_one_line_naming_the_url(gcs):
    run = "gs://no-such-bucket/run"
    start = time.time()
    with pytest.raises(trainer.WorkdirError) as error:
        trainer.check_workdir(run)
    message = str(error.value)
    assert run in message and "\n" not in message, message
    assert time.time() - start < 30


@pytest.mark.parametrize("source", ["arrayrecord", "frames", "videos"])
def test_a_source_given_a_url_fails_at_once_saying_what_to_do(source, gcs):
    cfg = data.default_config()
    cfg.source = source
    cfg.root = f"{gcs.bucket()}/data"
    cfg.train_list = "train.txt"
    start = time.time()
    with pytest.raises(storage.StorageError) as error:
        data.create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)
    message = str(error.value)
    assert time.time() - start < 5
    assert cfg.root in message and "gcsfuse" in message and "\n" not in message, message


def test_tfds_given_a_url_fails_at_once_saying_what_to_do():
    cfg = data.default_config()
    cfg.source = "tfds"
    cfg.tfds_name = "tea_ucf101"
    cfg.tfds_data_dir = "gs://bucket/tensorflow_datasets"
    with pytest.raises(storage.StorageError, match=r"gs://bucket/tensorflow_datasets.*gcsfuse"):
        data.create_loader(cfg, "train", batch_size=2, num_segments=4, seed=0)


def test_gcsfs_bucket_probe_warning_is_hidden():
    record = logging.LogRecord(
        "gcsfs", logging.WARNING, "", 0, "Could not determine bucket type for bucket", (), None
    )
    assert not logging.getLogger("gcsfs").filter(record)


# Modules that read or write a user's path only through `tea_jax.storage`: everything a run, an
# evaluation or a model writes, and what reads models, lists and class names. The dataset
# decoders and writers (tea_jax/data: video, sources, records, prepare, synthetic, datasets,
# tfds_builders) and convert's PyTorch input read local files only: `pipeline.build_source`
# refuses a URL for them with one line (tested above).
THROUGH_STORAGE = [
    "train.py",
    "eval.py",
    "tea_jax/train",
    "tea_jax/model_files.py",
    "tea_jax/inference.py",
    "tea_jax/export.py",
    "tea_jax/predict.py",
    "tea_jax/visualize.py",
    "tea_jax/data/listfiles.py",
    "tea_jax/data/pipeline.py",
]
# Calls that take a path: the `os`/`shutil`/`glob` file functions and the `open` builtin.
_PATH_MODULES = {"shutil", "glob"}
_OS_FUNCTIONS = {
    "makedirs",
    "mkdir",
    "remove",
    "unlink",
    "rename",
    "replace",
    "listdir",
    "scandir",
    "walk",
    "rmdir",
    "stat",
}
# `os.path` functions that only compute strings on local paths (allowed): `isabs`, `splitext`.
_OS_PATH_ALLOWED = {"isabs", "splitext"}
# Where the local-only readers may touch local files, with their reason.
_EXCEPTIONS = {
    # Writes list files and class names of a local preparation (`tea_jax.data.prepare`).
    ("tea_jax/data/listfiles.py", "write_list"),
    ("tea_jax/data/listfiles.py", "write_class_names"),
    ("tea_jax/data/listfiles.py", "copy_class_names"),
    # Scans local class folders of videos (data.source='videos' without lists, local only).
    ("tea_jax/data/listfiles.py", "class_folder_videos"),
    # Picks the local class-folder split of data.source='videos' (local only).
    ("tea_jax/data/pipeline.py", "build_source"),
}


def _files():
    for entry in THROUGH_STORAGE:
        path = ROOT / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _takes_path(call):
    parts = call.split(".")
    return (
        call == "open"
        or parts[0] in _PATH_MODULES
        or (parts[0] == "os" and len(parts) == 2 and parts[1] in _OS_FUNCTIONS)
        or (call.startswith("os.path.") and parts[2] not in _OS_PATH_ALLOWED)
    )


def _path_calls(path):
    """(innermost function, call) of every call in ``path`` that takes a path ('' at module
    level)."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call) and _takes_path(ast.unparse(child.func)):
                found.append((function, ast.unparse(child.func)))
            visit(child, function)

    visit(ast.parse(path.read_text(), str(path)), "")
    return found


def test_user_paths_go_through_the_storage_module():
    offending = []
    for path in _files():
        relative = str(path.relative_to(ROOT))
        for function, call in _path_calls(path):
            if (relative, function) not in _EXCEPTIONS:
                offending.append(f"{relative}: {call} in {function or 'the module'}")
    assert offending == []


def test_the_path_check_finds_a_path_call(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\ndef f(p):\n    return os.path.exists(p) or open(p)\n")
    assert sorted(_path_calls(module)) == [("f", "open"), ("f", "os.path.exists")]
