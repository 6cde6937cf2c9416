"""Runs the longest test files first, so that the two workers (`pyproject.toml`) finish together.

Each worker takes whole files (`--dist loadfile`) in collection order; starting with the longest
keeps one worker from running a long file alone at the end. The order of tests within a file is
unchanged.
"""

# Longest first, from the suite's `--durations` on a 2-core CPU.
LONGEST_FILES = (
    "test_train.py",
    "test_datasets_e2e.py",
    "test_models.py",
    "test_visualize.py",
    "test_bench.py",
    "test_train_cli.py",
    "test_configs.py",
    "test_faults.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: each file keeps its order
