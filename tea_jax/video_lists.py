"""Many videos at once: every file of a list or a folder labelled by one model, resumably.

Videos are read by evaluation's reader (`Predictor.reader`) in worker processes, in batches of
the predictor's batch size through its one compiled function. Each video's result is one line
of the output (JSON lines, or CSV for a ``.csv`` output), appended as its batch is scored; a
video that cannot be read gets a line with the reason instead, and the run goes on. A re-run
with the same output skips the videos that already have a result there (and tries the failed
ones again).
"""

import contextlib
import csv
import dataclasses
import io
import json
import os
import signal
import threading

import grain
import numpy as np
from tqdm import tqdm

from tea_jax import storage
from tea_jax.data import listfiles
from tea_jax.data.errors import DataError
from tea_jax.data.pipeline import read_in_workers
from tea_jax.errors import ConfigError
from tea_jax.predictor import Predictor, softmax, top_classes


def video_paths(source: str, root: str = "") -> list[str]:
    """The videos of a list file (lines ``path`` or ``path label``, as evaluation's lists;
    relative paths under `root`) or of a folder (its video files, recursively, sorted).

    Raises:
      DataError: the list or folder cannot be read or holds no video.
    """
    if os.path.isdir(source):
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(source)
            for name in names
            if name.lower().endswith(listfiles.VIDEO_EXTENSIONS)
        )
        if not paths:
            raise DataError(source, f"no video files ({', '.join(listfiles.VIDEO_EXTENSIONS)})")
        return paths
    try:
        lines = storage.read_text(source).splitlines()
    except OSError as e:
        raise DataError(source, f"cannot read list file ({e.strerror or e})") from None
    paths = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) > 1 and fields[-1].isdigit():
            line = line.rsplit(None, 1)[0]
        paths.append(storage.join(root, line.strip()) if root else line.strip())
    if not paths:
        raise DataError(source, "list file has no entries")
    return paths


@dataclasses.dataclass
class Output:
    """The results file: JSON lines, or CSV when its name ends in ``.csv``.

    Opening keeps the complete lines of an existing file with a result (dropping failures and a
    line cut short by a killed run) and `done` holds their videos.
    """

    path: str
    top_k: int
    full_scores: bool

    def __post_init__(self):
        self.csv = self.path.lower().endswith(".csv")
        self.done: set[str] = set()
        kept = []
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                text = f.read()
            complete = text[: text.rfind("\n") + 1]
            for video, line in self._parse(complete):
                self.done.add(video)
                kept.append(line)
        if self.csv and not kept:
            kept.append(self._csv_line(self._header()))
        storage.write_text(self.path, "".join(kept))

    def _header(self) -> list[str]:
        ranks = [f"{field}_{k}" for k in range(1, self.top_k + 1) for field in ("class", "prob")]
        return ["video", "error", *ranks]

    @staticmethod
    def _csv_line(row: list) -> str:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(row)
        return text.getvalue()

    def _parse(self, text: str):
        """(video, line) of the lines with a result."""
        if self.csv:
            for line in text.splitlines(keepends=True)[1:]:
                row = next(csv.reader([line]))
                if len(row) > 1 and not row[1]:
                    yield row[0], line
            return
        for line in text.splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:  # not a line of ours: dropped, its video scored again
                continue
            if isinstance(record, dict) and "top" in record and "video" in record:
                yield record["video"], line

    def line(self, video: str, probabilities: np.ndarray | None, names, error: str = "") -> str:
        """The output line of one video: its top-k (and all probabilities), or its error."""
        if self.csv:
            top = [] if probabilities is None else top_classes(probabilities, names, self.top_k)
            ranks = [value for t in top for value in (t["class"], t["probability"])]
            return self._csv_line([video, error, *ranks])
        if probabilities is None:
            return json.dumps({"video": video, "error": error}) + "\n"
        record = {"video": video, "top": top_classes(probabilities, names, self.top_k)}
        if self.full_scores:
            record["probabilities"] = [round(float(p), 6) for p in probabilities]
        return json.dumps(record) + "\n"


@contextlib.contextmanager
def _interrupt_between_batches():
    """Ctrl-C (SIGINT) sets the event that the loop checks between batches; a second one raises
    at once. (A KeyboardInterrupt raised wherever the main thread happens to be is lost when that
    is an object's finaliser, such as a loader's shared memory being released.)"""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def handle(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def predict_videos(
    predictor: Predictor,
    paths: list[str],
    output: Output,
    *,
    workers: int,
    progress: bool = True,
) -> tuple[int, dict[str, str]]:
    """Scores every video of `paths` without a result in `output`, appending one line each.

    Args:
      predictor: the model; `batch_size` videos per call, `num_clips` clips each.
      paths: the videos; video i's random clips (``num_clips`` > 1) are drawn from the seed
        and i, as evaluation draws them for the i-th video of its list.
      output: the results file.
      workers: decoding processes (0: threads of this process).
      progress: show a progress bar (videos/s) on stderr.

    Returns:
      ``(videos scored, {path: reason} of those that could not be read)``.

    Raises:
      KeyboardInterrupt: on Ctrl-C, once the batch in progress is written (a second Ctrl-C: at
        once).
    """
    if workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {workers}")
    todo = [i for i, path in enumerate(paths) if path not in output.done]
    if not todo:
        return 0, {}
    reader = predictor.reader(paths, on_error="skip")
    ds = grain.MapDataset.source(todo).map(reader).batch(predictor.batch_size)
    scored, failed = 0, {}
    with (
        open(output.path, "a", newline="") as out,
        tqdm(total=len(todo), unit="video", disable=not progress) as bar,
        _interrupt_between_batches() as interrupted,
    ):
        for batch in read_in_workers(ds, workers):
            probabilities = softmax(predictor.logits(batch["video"]))
            lines = []
            for row, index in enumerate(batch["index"]):
                path = paths[index]
                if batch["mask"][row]:
                    lines.append(output.line(path, probabilities[row], predictor.names))
                    scored += 1
                else:
                    reason = batch["_bad"][row].split("\t", 1)[-1]
                    failed[path] = reason
                    lines.append(output.line(path, None, predictor.names, reason))
            out.write("".join(lines))
            out.flush()
            bar.update(len(lines))
            if interrupted.is_set():
                raise KeyboardInterrupt
    return scored, failed
