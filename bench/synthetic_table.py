"""Trains TEA and its baselines on the synthetic motion dataset and writes the README's
results table.

    python bench/synthetic_table.py [--models tea50 tsn_res2net50 ...] [--seeds 0 1 2]

Each run is `python train.py --config configs/synthetic_tea8.py:MODEL --config.seed=SEED` (same
reduced skeleton, data and budget for every model) in `--root/MODEL/seed_SEED`; a finished run is
resumed, not repeated. The table (mean and spread of the final validation top-1 over the seeds)
replaces the text between the markers in README.md, so it is regenerated, never typed.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- synthetic-table:start -->", "<!-- synthetic-table:end -->"
DESCRIPTIONS = {
    "tea50": "TEA (ME + MTA)",
    "tsn_res2net50": "TSN (Res2Net, no temporal modelling)",
    "tsn_resnet50": "TSN (ResNet)",
    "tsm_resnet50": "TSM",
    "r2plus1d_resnet50": "(2+1)D ResNet",
    "r2plus1d_res2net50": "(2+1)D Res2Net",
    "mta50": "MTA only",
    "me50": "(2+1)D ResNet + ME",
    "me_nores50": "(2+1)D ResNet + ME without residual",
    "se50": "(2+1)D ResNet + SE",
}
DEFAULT_MODELS = [
    "tea50",
    "tsn_res2net50",
    "tsm_resnet50",
    "r2plus1d_resnet50",
    "mta50",
    "me50",
    "me_nores50",
]


def final_val(workdir: Path) -> dict:
    """The last validation record of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r.get("split") == "val"]
    if not val:
        raise RuntimeError(f"{workdir / 'metrics.jsonl'} has no validation record")
    return val[-1]


def run(model: str, seed: int, root: Path, overrides: list[str]) -> dict:
    workdir = root / model / f"seed_{seed}"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"--config={ROOT / 'configs' / 'synthetic_tea8.py'}:{model}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        *overrides,
    ]
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    record = final_val(workdir)
    return {
        "model": model,
        "seed": seed,
        "top1": record["top1"],
        "step": record["step"],
        "minutes": (time.time() - start) / 60,
    }


def table(results: list[dict], command: str) -> str:
    lines = [
        f"Final validation top-1 (%) on the synthetic motion dataset (8 classes in time-reversed "
        f"pairs, chance 12.5%), written by `{command}`:",
        "",
        "| model | network | top-1 mean | spread (min-max) | seeds |",
        "|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in results):
        top1 = [100 * r["top1"] for r in results if r["model"] == model]
        lines.append(
            f"| `{model}` | {DESCRIPTIONS.get(model, model)} | {statistics.mean(top1):.1f} | "
            f"{min(top1):.1f}-{max(top1):.1f} | {len(top1)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "synthetic_table")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("overrides", nargs="*", help="extra --config.key=value flags for every run")
    args = parser.parse_args()

    results = [run(m, s, args.root, args.overrides) for m in args.models for s in args.seeds]
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "results.json").write_text(json.dumps(results, indent=1))
    command = "python bench/synthetic_table.py " + " ".join(
        ["--models", *args.models, "--seeds", *map(str, args.seeds), *args.overrides]
    )
    readme = args.readme.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"{args.readme} has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    args.readme.write_text(
        f"{head}{START}\n{table(results, command)}\n{END}{rest.split(END, 1)[1]}"
    )
    print(table(results, command))


if __name__ == "__main__":
    main()
