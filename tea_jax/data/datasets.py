"""The five public datasets in their published layouts with their official annotation files.

`manual_dir` layouts (as downloaded and extracted):
  ucf101:   UCF-101/<Class>/v_<Class>_gXX_cYY.avi,
            ucfTrainTestlist/{classInd,trainlist0K,testlist0K}.txt
  hmdb51:   hmdb51/<class>/<video>.avi (the per-class rars extracted),
            testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
  kinetics400: {train,validate,test}.csv (or annotations/{train,val,test}.csv) and the videos
            anywhere below, named <youtube_id>_<start:06d>_<end:06d>.<ext> (or <youtube_id>.<ext>):
            flat {train,val,test}/ folders (the public mirrors) or <split>/<class name>/ folders
            (the ActivityNet downloader)
  something_something_v1: 20bn-something-something-v1/<id>/<00001>.jpg,
            something-something-v1-{labels,train,validation}.csv
  something_something_v2: 20bn-something-something-v2/<id>.webm,
            something-something-v2-{labels,train,validation}.json
"""

import csv
import dataclasses
import glob
import json
import logging
import os

from tea_jax.data.listfiles import VIDEO_EXTENSIONS

NAMES = ("ucf101", "hmdb51", "kinetics400", "something_something_v1", "something_something_v2")
FOLDS = {"ucf101": (1, 2, 3), "hmdb51": (1, 2, 3)}
NUM_CLASSES = {
    "ucf101": 101,
    "hmdb51": 51,
    "kinetics400": 400,
    "something_something_v1": 174,
    "something_something_v2": 174,
}


@dataclasses.dataclass
class Annotations:
    """A dataset's classes and per-split examples.

    Attributes:
      classes: class names, index = label.
      splits: split -> [(path relative to `root`, label)].
      root: folder of the videos (or frame folders when `frames`).
      frames: examples are frame folders (Something-Something V1) rather than video files.
      template: frame file names when `frames`.
      missing: split -> annotated videos not found in the download (names as annotated).
    """

    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]
    root: str
    frames: bool = False
    template: str = ""
    missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _lines(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def ucf101(manual_dir: str, fold: int = 1) -> Annotations:
    """Classes in `classInd.txt` order (its 1-based indices minus one)."""
    lists = os.path.join(manual_dir, "ucfTrainTestlist")
    numbered = [line.split() for line in _lines(os.path.join(lists, "classInd.txt"))]
    classes = [name for _, name in sorted((int(number), name) for number, name in numbered)]
    index = {name: i for i, name in enumerate(classes)}

    def split(name: str) -> list[tuple[str, int]]:
        paths = [line.split()[0] for line in _lines(os.path.join(lists, f"{name}list0{fold}.txt"))]
        return [(p, index[p.split("/")[0]]) for p in paths]

    return Annotations(
        classes,
        {"train": split("train"), "test": split("test")},
        os.path.join(manual_dir, "UCF-101"),
    )


def hmdb51(manual_dir: str, fold: int = 1) -> Annotations:
    """Classes in sorted order of their split files' names."""
    split_dir = os.path.join(manual_dir, "testTrainMulti_7030_splits")
    files = sorted(glob.glob(os.path.join(split_dir, f"*_test_split{fold}.txt")))
    classes = [os.path.basename(f)[: -len(f"_test_split{fold}.txt")] for f in files]
    splits = {"train": [], "test": []}
    for label, (name, path) in enumerate(zip(classes, files, strict=True)):
        for line in _lines(path):
            video, kind = line.split()
            if kind in ("1", "2"):
                splits["train" if kind == "1" else "test"].append((f"{name}/{video}", label))
    return Annotations(classes, splits, os.path.join(manual_dir, "hmdb51"))


def _find_csv(manual_dir: str, names: tuple[str, ...]) -> str | None:
    for folder in (manual_dir, os.path.join(manual_dir, "annotations")):
        for name in names:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def kinetics400(manual_dir: str) -> Annotations:
    """Classes in sorted order, as the released `tools/gen_label_kinetics.py` numbers them.

    The videos may lie anywhere below `manual_dir`: flat per-split folders (`train/`, `val/`,
    `test/` beside `annotations/`, as the public mirrors ship them) or one folder per class (the
    ActivityNet downloader's `<split>/<class name>/`). Annotated videos that are not found are
    listed in `missing`; rows without a label (an unlabelled test.csv) are left out.
    """
    videos = {}
    for folder, _, files in sorted(os.walk(manual_dir)):
        for file in sorted(files):
            stem, ext = os.path.splitext(file)
            if ext.lower() in VIDEO_EXTENSIONS:
                videos.setdefault(stem, os.path.relpath(os.path.join(folder, file), manual_dir))
    rows = {}
    for split, names in (
        ("train", ("train.csv",)),
        ("val", ("validate.csv", "val.csv")),
        ("test", ("test.csv",)),
    ):
        path = _find_csv(manual_dir, names)
        if path:
            with open(path) as f:
                rows[split] = list(csv.DictReader(f))
    if "train" not in rows:
        raise FileNotFoundError(
            f"{manual_dir}: no train.csv (nor annotations/train.csv) of Kinetics-400"
        )
    classes = sorted({row["label"] for row in rows["train"]})
    index = {name: i for i, name in enumerate(classes)}
    splits, missing = {}, {}
    for split, table in rows.items():
        found, absent = [], []
        labelled = [row for row in table if row.get("label") in index]
        for row in labelled:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            clip = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            path = videos.get(clip) or videos.get(row["youtube_id"])
            if path:
                found.append((path, index[row["label"]]))
            else:
                absent.append(clip)
        logging.info(
            "kinetics400 %s: %d of %d annotated videos found (%d rows without a known label)",
            split,
            len(found),
            len(labelled),
            len(table) - len(labelled),
        )
        splits[split], missing[split] = found, absent
    return Annotations(classes, splits, manual_dir, missing=missing)


def _label_text(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def something_something_v1(manual_dir: str) -> Annotations:
    """Classes in alphabetical order, as the released `tools/gen_label_sthv1.py` numbers them."""
    prefix = os.path.join(manual_dir, "something-something-v1-")
    classes = sorted(_lines(prefix + "labels.csv"))
    index = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split, name in (("train", "train"), ("val", "validation")):
        rows = [line.split(";", 1) for line in _lines(f"{prefix}{name}.csv")]
        splits[split] = [(video_id, index[label]) for video_id, label in rows]
    root = os.path.join(manual_dir, "20bn-something-something-v1")
    return Annotations(classes, splits, root, frames=True, template="{:05d}.jpg")


def something_something_v2(manual_dir: str) -> Annotations:
    """Classes numbered by the labels JSON, as the released `tools/gen_label_sthv2.py`."""
    prefix = os.path.join(manual_dir, "something-something-v2-")
    with open(prefix + "labels.json") as f:
        labels = {name: int(i) for name, i in json.load(f).items()}
    classes = sorted(labels, key=labels.get)
    splits = {}
    for split, name in (("train", "train"), ("val", "validation")):
        with open(f"{prefix}{name}.json") as f:
            rows = json.load(f)
        splits[split] = [
            (f"{row['id']}.webm", labels[_label_text(row["template"])]) for row in rows
        ]
    return Annotations(classes, splits, os.path.join(manual_dir, "20bn-something-something-v2"))


def load(name: str, manual_dir: str, fold: int = 1) -> Annotations:
    """Annotations of dataset `name` (see NAMES); `fold` selects UCF101/HMDB51's split 1-3."""
    loaders = {
        "ucf101": ucf101,
        "hmdb51": hmdb51,
        "kinetics400": kinetics400,
        "something_something_v1": something_something_v1,
        "something_something_v2": something_something_v2,
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset '{name}', expected one of {NAMES}")
    if name in FOLDS:
        if fold not in FOLDS[name]:
            raise ValueError(f"{name} has folds {FOLDS[name]}, got {fold}")
        return loaders[name](manual_dir, fold)
    return loaders[name](manual_dir)


def count_frames(folder: str) -> int:
    """Number of frame files in a folder."""
    return sum(1 for f in os.scandir(folder) if f.name.lower().endswith((".jpg", ".jpeg", ".png")))
