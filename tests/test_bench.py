"""The benchmark scripts: accelerator_check end to end on CPU, its batch search; synthetic_table."""

import json
import os
import subprocess
import sys

import pytest
from fast_compile import cpu_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import accelerator_check  # noqa: E402


def _search(largest_fitting, start, max_batch, step=1):
    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= largest_fitting

    return accelerator_check.largest_batch(fits, start, max_batch, step), tried


def test_batch_search_doubles_then_bisects():
    assert _search(37, 8, 1024) == ((37, 38), [8, 16, 32, 64, 48, 40, 36, 38, 37])
    (fitting, failing), _ = _search(37, 8, 1024, step=8)
    assert (fitting, failing) == (32, 40)


def test_batch_search_is_bounded_and_goes_below_a_start_that_does_not_fit():
    assert _search(5000, 8, 100) == ((100, None), [8, 16, 32, 64, 100])
    assert _search(3, 8, 100) == ((3, 4), [8, 4, 2, 3])
    assert _search(0, 2, 100) == ((0, 1), [2, 1])


def _run_check(args, workdir):
    """Runs the check with `args` on CPU; returns the process and its final JSON line."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "accelerator_check.py"), *args.split()],
        env=cpu_env(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def test_nothing_starts_after_the_time_limit(tmp_path):
    _, result = _run_check("--time_limit_s 0 --segments 8 --dtypes bf16", tmp_path)
    assert result["rows"] == []
    assert [s["tries"] for s in result["batch_search"]["results"]] == [[], [], []]
    assert result["notes"] == [
        f"not run (time limit 0 s): {what}"
        for what in (
            "tea50 8f train bf16 batch 32",
            "tsn_res2net50 8f train bf16 batch 32",
            "tea50 8f infer bf16 batch 32",
            "tsn_res2net50 8f infer bf16 batch 32",
            "batch search none at 32",
            "batch search dots at 1",
            "batch search blocks at 1",
        )
    ]


@pytest.mark.slow
def test_accelerator_check_runs_end_to_end_on_cpu(tmp_path):
    """Every step of the check on a reduced network: rows, reference note, search, JSON line.

    The TSN ResNet compiles fastest; the check runs any model the same way. About a minute on 2
    cores: the subprocess compiles a training and an inference step and three batch searches.
    """
    args = "--size 32 --stage_sizes 1,1,1,1 --width 0.25 --max_batch 2 --steps 2 --warmup 1"
    args += " --batch 1 --segments 4 --models tsn_resnet50 --dtypes fp32 --time_limit_s 1e9"
    proc, result = _run_check(args, tmp_path)
    rows = [r for r in result["rows"] if r["implementation"] == "tea_jax"]
    assert [(r["mode"], r["batch"], r["num_segments"]) for r in rows] == [
        ("train", 2, 4),
        ("infer", 2, 4),
    ]
    for row in rows:
        measured = row["result"]
        assert measured["clips_per_sec"] == pytest.approx(2 / measured["step_time_s"])
        assert measured["compile_time_s"] > 0 and measured["tflops_per_sec"] > 0
        assert measured["mfu"] is None  # no known CPU peak
    assert "| tsn_resnet50-4f training, fp32, 2 clips | tea_jax |" in proc.stdout
    assert result["notes"] == ["PyTorch reference not run: reduced network: the reference has none"]
    searches = result["batch_search"]["results"]
    assert [s["remat"] for s in searches] == ["", "dots", "blocks"]
    for search in searches:
        assert (search["largest_fitting"], search["smallest_failing"]) == (2, None)
        assert search["tries"] == [{"batch": 2, "fits": True}]


def test_reference_rows_without_cuda_are_skipped_with_a_note():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("PyTorch sees a CUDA device")
    assert accelerator_check._reference_measurement({}) == {
        "skipped": "PyTorch sees no CUDA device"
    }


def test_reference_row_gets_the_model_flops_and_mfu_of_its_device():
    # The JAX step: 1.978 PFLOP in 2 s; the reference takes 4 s on an H200 (bf16 peak 989 TFLOP/s).
    jax_result = {"tflops_per_sec": 989.0, "step_time_s": 2.0}
    reference = {"step_time_s": 4.0, "device": "NVIDIA H200", "clips_per_sec": 4.0}
    accelerator_check._add_reference_figures(jax_result, reference, "bf16")
    assert reference["tflops_per_sec"] == pytest.approx(494.5)
    assert reference["mfu"] == pytest.approx(0.5)
    row = {
        "model": "tea50",
        "num_segments": 16,
        "mode": "train",
        "dtype": "bf16",
        "batch": 16,
        "implementation": "PyTorch reference",
        "result": reference | {"peak_memory_bytes": 3 * 2**30},
    }
    assert accelerator_check._row_line(row) == (
        "| TEA-16f training, bf16, 16 clips | PyTorch reference | 4.0 | 4000.0 ms | n/a "
        "| 3.00 GiB | 50.0% | n/a |"
    )


def test_synthetic_table_resumes_a_run_only_on_the_dataset_it_began_on(tmp_path, monkeypatch):
    import synthetic_table

    trained = []
    monkeypatch.setattr(synthetic_table.subprocess, "run", lambda cmd, **_: trained.append(cmd))
    monkeypatch.setattr(synthetic_table, "final_val", lambda _: {"top1": 0.5, "step": 500})
    monkeypatch.setattr(synthetic_table, "dataset_meta", lambda _: {"seed": 0})
    checkpoints = tmp_path / "tea50" / "seed_0" / "checkpoints"
    checkpoints.mkdir(parents=True)  # a run from before datasets were recorded
    synthetic_table.run("clutter", "tea50", 0, tmp_path, [], {"seed": 0})
    assert not checkpoints.exists()
    checkpoints.mkdir()
    synthetic_table.run("clutter", "tea50", 0, tmp_path, [], {"seed": 0})
    assert checkpoints.exists()  # same dataset: resumed
    synthetic_table.run("clutter", "tea50", 0, tmp_path, [], {"seed": 1})
    assert not checkpoints.exists()
    assert len(trained) == 3
