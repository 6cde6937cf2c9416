"""Trains TEA and the paper's Table 1 networks on a synthetic task and writes its README table.

    python bench/synthetic_table.py --task {motion,clutter,order} [--models ...] [--seeds 0 1 2]

Each run is `python train.py --config configs/CONFIG.py:MODEL --config.seed=SEED` (CONFIG is the
task's config: the same reduced skeleton, recipe and budget for every model) in
`--root/TASK/MODEL/seed_SEED`. Runs go seed by seed (every model's seed 0 first), and each
finished run is recorded in `--root/TASK/results.json` at once, so an interrupted table resumes
where it stopped; an interrupted run resumes from its last checkpoint. The table (mean and
spread of the final validation top-1 over the seeds, and the per-seed differences of the pairs
the paper compares) replaces the text between the task's markers in README.md, so it is
regenerated, never typed; `--table_only` rewrites it from the results recorded so far.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "motion": (
        "synthetic_tea8",
        "the synthetic motion dataset (8 classes in time-reversed pairs, chance 12.5%)",
    ),
    "clutter": (
        "synthetic_clutter",
        "the clutter task (8 directions in time-reversed pairs, chance 12.5%)",
    ),
    "order": (
        "synthetic_order",
        "the order task (2 classes, each the time reversal of the other, chance 50%)",
    ),
}
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
# The paper's Table 1 networks.
DEFAULT_MODELS = [
    "tsn_res2net50",
    "tsm_resnet50",
    "r2plus1d_resnet50",
    "r2plus1d_res2net50",
    "mta50",
    "se50",
    "me50",
    "me_nores50",
    "tea50",
]
# The comparisons the paper draws from Table 1: (model, against).
PAIRS = (
    ("me50", "se50"),
    ("mta50", "r2plus1d_res2net50"),
    ("tea50", "mta50"),
    ("tea50", "me50"),
)


def markers(task: str) -> tuple[str, str]:
    name = "synthetic-table" if task == "motion" else f"synthetic-table-{task}"
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def final_val(workdir: Path) -> dict:
    """The last validation record of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r.get("split") == "val"]
    if not val:
        raise RuntimeError(f"{workdir / 'metrics.jsonl'} has no validation record")
    return val[-1]


def run(task: str, model: str, seed: int, root: Path, overrides: list[str]) -> dict:
    workdir = root / model / f"seed_{seed}"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"--config={ROOT / 'configs' / TASKS[task][0]}.py:{model}",
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


def table(task: str, results: list[dict], command: str) -> str:
    top1 = {}
    for r in results:
        top1.setdefault(r["model"], {})[r["seed"]] = 100 * r["top1"]
    lines = [
        f"Final validation top-1 (%) on {TASKS[task][1]}, written by `{command}`:",
        "",
        "| model | network | top-1 mean | spread (min-max) | seeds |",
        "|---|---|---|---|---|",
    ]
    for model, by_seed in top1.items():
        values = list(by_seed.values())
        lines.append(
            f"| `{model}` | {DESCRIPTIONS.get(model, model)} | {statistics.mean(values):.1f} | "
            f"{min(values):.1f}-{max(values):.1f} | {len(values)} |"
        )
    rows = []
    for model, other in PAIRS:
        seeds = sorted(set(top1.get(model, {})) & set(top1.get(other, {})))
        if seeds:
            differences = [top1[model][s] - top1[other][s] for s in seeds]
            each = ", ".join(f"{d:+.1f}" for d in differences)
            rows.append(f"| `{model}` - `{other}` | {each} | {statistics.mean(differences):+.1f} |")
    if rows:
        lines += [
            "",
            "| comparison (top-1 points) | per seed (seed 0, 1, ...) | mean |",
            "|---|---|---|",
            *rows,
        ]
    return "\n".join(lines)


def write_table(readme: Path, task: str, text: str) -> None:
    start, end = markers(task)
    content = readme.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="motion")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "synthetic_table")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument(
        "--table_only", action="store_true", help="write the table from the recorded results"
    )
    parser.add_argument("overrides", nargs="*", help="extra --config.key=value flags for every run")
    args = parser.parse_args()

    root = args.root / args.task
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["model"], r["seed"]) for r in results}
    for seed in [] if args.table_only else args.seeds:
        for model in args.models:
            if (model, seed) not in done:
                results.append(run(args.task, model, seed, root, args.overrides))
                results_path.write_text(json.dumps(results, indent=1))
    wanted = [r for r in results if r["model"] in args.models and r["seed"] in args.seeds]
    wanted.sort(key=lambda r: (args.models.index(r["model"]), r["seed"]))
    words = ["--task", args.task, "--models", *args.models, "--seeds", *map(str, args.seeds)]
    command = " ".join(["python bench/synthetic_table.py", *words, *args.overrides])
    text = table(args.task, wanted, command)
    write_table(args.readme, args.task, text)
    print(text)


if __name__ == "__main__":
    main()
