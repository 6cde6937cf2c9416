"""Dataset preparation CLIs.

  # 1. List files from a dataset's official annotation files (writes video lists + classes.txt).
  python -m tea_jax.data.prepare lists --dataset ucf101 --manual_dir ~/downloads/ucf101 \\
      --output data/ucf101
  # 2. Frame folders (JPEG, img_00001.jpg, ...) from videos, and the matching frame list.
  python -m tea_jax.data.prepare frames --list data/ucf101/train_split1.txt \\
      --root ~/downloads/ucf101/UCF-101 --output data/ucf101/frames --short_side 256
  # 3. ArrayRecord shards (one record per JPEG frame, and an index of the videos) from frame
  # folders or videos.
  python -m tea_jax.data.prepare arrayrecord --list data/ucf101/frames/train_split1.txt \\
      --kind frames --root data/ucf101/frames --output data/ucf101/arrayrecord --split train
  # Or a TFDS dataset (ArrayRecord, read with tfds.data_source) straight from the download.
  python -m tea_jax.data.prepare tfds --dataset ucf101 --fold 1 --manual_dir ~/downloads/ucf101

`frames` and `arrayrecord` decode, resize and encode one frame at a time (a worker's memory does
not grow with a video's length or resolution), in `--workers` processes, and show a progress bar
(videos done of all, videos/s, time left, failures). Run again after an interruption (a kill, a
full disk, a reboot), the same command keeps what was finished and does the rest: a video's
frame folder is written as FOLDER.partial and renamed when complete; a shard is written in
SPLIT.progress/ and moved beside the others when complete. Videos that cannot be read are
listed, with the reason, in LIST_failures.txt (frames) or SPLIT_failures.txt (arrayrecord) in
the output folder; a re-run tries them again. `--overwrite` writes everything again.
"""

import argparse
import collections
import concurrent.futures
import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import msgpack
import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tea_jax import cli, storage
from tea_jax.data import datasets, records
from tea_jax.data.errors import DataError
from tea_jax.data.listfiles import (
    CLASSES_FILE,
    Entry,
    copy_class_names,
    read_list,
    write_class_names,
    write_list,
)
from tea_jax.data.sources import jpeg_frames
from tea_jax.data.video import iter_frames
from tea_jax.data.workers import exit_with_parent_init
from tea_jax.errors import UserError

FRAME_TEMPLATE = "img_{:05d}.jpg"
# A video's frames are written into FOLDER + PARTIAL, renamed to FOLDER once complete.
PARTIAL = ".partial"
# The options of the frames in an output folder: a run with others stops (or --overwrite).
FRAME_OPTIONS = "frames_options.json"


def _run(function: Callable, items: Sequence, workers: int, ordered: bool) -> Iterator:
    """Yields `function(item)` for every item, from `workers` processes (1: this one).

    At most a few items per worker are in flight, so results waiting for an earlier one (with
    `ordered`) stay few. A worker that dies (killed, out of memory) ends the run with a message;
    what was finished is kept.
    """
    if workers <= 1 or len(items) <= 1:
        yield from map(function, items)
        return
    workers = min(workers, len(items))
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent_init(),
        initargs=(0, workers),
    )
    with pool:
        items = iter(items)
        pending = collections.deque(
            pool.submit(function, i) for i in itertools.islice(items, 4 * workers)
        )
        while pending:
            if ordered:
                future = pending[0]
            else:
                done = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED").done
                future = next(iter(done))
            pending.remove(future)
            pending.extend(pool.submit(function, i) for i in itertools.islice(items, 1))
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool as e:
                raise UserError(
                    f"a worker process died ({e})",
                    hint="what was finished is kept: run the same command again to resume",
                ) from None
            yield result


class _Progress:
    """A progress bar of videos (done, total, videos/s, time left, failures) and a summary."""

    def __init__(self, what: str, total: int, done_before: int):
        self.done_before, self.done, self.failures = done_before, 0, []
        self._bar = tqdm.tqdm(
            total=total,
            initial=done_before,
            desc=what,
            unit="video",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30,
            postfix={"failed": 0},
        )
        # Warnings print above the bar instead of through it.
        self._logging = logging_redirect_tqdm()
        self._logging.__enter__()

    def update(self, failure: tuple[str, str] | None = None) -> None:
        """Counts a video done, or failed with (path, reason)."""
        if failure:
            self.failures.append(failure)
            self._bar.set_postfix(failed=len(self.failures), refresh=False)
        else:
            self.done += 1
        self._bar.update()
        if failure:
            logging.warning("skipped %s: %s", *failure)

    def close(self) -> None:
        self._logging.__exit__(None, None, None)
        self._bar.close()

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close()
        if isinstance(error, OSError):  # a full disk, a lost mount: not the video's fault
            raise UserError(
                f"{error}; stopped at {self.done_before + self.done} of {self._bar.total} videos "
                "done",
                hint="what was finished is kept: fix the cause and run the same command again "
                "to resume",
            ) from None

    def summary(self, total: int) -> str:
        done = self.done_before + self.done
        line = f"{done} of {total} videos done ({self.done} now, {self.done_before} before)"
        return line + (f", {len(self.failures)} failed" if self.failures else "")


def _write_failures(path: str, failures: Iterable[tuple[str, str]]) -> str | None:
    """Writes `path<TAB>reason` lines (none: removes the file); returns the path if written."""
    failures = sorted(failures)
    if not failures:
        if os.path.exists(path):
            os.remove(path)
        return None
    with open(path, "w") as f:
        f.writelines(f"{video}\t{reason}\n" for video, reason in failures)
    return path


def _frame_folder(entry: Entry, root: str, output: str) -> str:
    relative = os.path.splitext(os.path.relpath(entry.path, root))[0].replace(" ", "_")
    return os.path.join(output, relative)


def _extract(job: tuple[str, str], short_side: int | None, quality: int):
    """Writes the frames of video `job[0]` into folder `job[1]`: (video, num_frames, error)."""
    video, folder = job
    partial = folder + PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    count = 0
    try:
        for count, frame in enumerate(iter_frames(video, short_side), 1):
            with open(os.path.join(partial, FRAME_TEMPLATE.format(count)), "wb") as f:
                f.write(records.encode_jpeg(frame, quality))
    except DataError as e:
        shutil.rmtree(partial, ignore_errors=True)
        return video, None, e.reason
    if os.path.isdir(folder):  # --overwrite
        shutil.rmtree(folder)
    os.rename(partial, folder)
    return video, count, None


def _check_options(path: str, options: dict, overwrite: bool) -> None:
    """Stops when an earlier run wrote part of the output with other options; records them."""
    if os.path.isfile(path) and not overwrite:
        with open(path) as f:
            before = json.load(f)
        changed = sorted(k for k in options if before.get(k) != options[k])
        if changed:
            raise UserError(
                f"{path}: part of the output was written with other {', '.join(changed)} "
                f"({', '.join(f'{k}={before.get(k)}' for k in changed)})",
                hint="run the command as it was, or pass --overwrite to write every video again",
            )
    storage.write_text(path, json.dumps(options, indent=2))


def _finished_frames(folder: str) -> int:
    """Frames in a finished folder (0: none, or not finished)."""
    return datasets.count_frames(folder) if os.path.isdir(folder) else 0


def extract_frames(args) -> None:
    entries = read_list(
        args.list, with_num_frames=False, root=args.root, on_error="skip", max_bad_fraction=1.0
    )
    folder_of = {e.path: _frame_folder(e, args.root, args.output) for e in entries}
    video_of = {}
    for video, folder in folder_of.items():
        if video_of.setdefault(folder, video) != video:
            raise UserError(f"{video_of[folder]} and {video} would both be written to {folder}")
    os.makedirs(args.output, exist_ok=True)
    _check_options(
        os.path.join(args.output, FRAME_OPTIONS),
        {"short_side": args.short_side, "quality": args.quality},
        args.overwrite,
    )
    counts = {} if args.overwrite else {p: _finished_frames(f) for p, f in folder_of.items()}
    counts = {p: n for p, n in counts.items() if n}
    jobs = [(p, f) for p, f in folder_of.items() if p not in counts]
    extract = functools.partial(_extract, short_side=args.short_side, quality=args.quality)
    name = os.path.splitext(os.path.basename(args.list))[0]
    with _Progress(f"frames {name}", len(folder_of), len(counts)) as progress:
        for video, count, error in _run(extract, jobs, args.workers, ordered=False):
            if error:
                progress.update((video, error))
            else:
                counts[video] = count
                progress.update()
    done = [Entry(folder_of[e.path], e.label, counts[e.path]) for e in entries if e.path in counts]
    list_path = os.path.join(args.output, os.path.basename(args.list))
    write_list(list_path, done, args.output)
    copy_class_names(args.list, args.output)
    failures = _write_failures(os.path.join(args.output, f"{name}_failures.txt"), progress.failures)
    failed = f" (listed in {failures}; a re-run retries them)" if failures else ""
    print(f"{progress.summary(len(folder_of))}{failed}; frame list {list_path}")


def _video_frames(
    job: tuple[int, Entry],
    root: str,
    kind: str,
    short_side: int | None,
    quality: int,
    template: str,
):
    """(position, id, label, JPEG frames, None) of one video, or (position, path, ..., error)."""
    position, entry = job
    video_id = os.path.relpath(entry.path, root) if root else entry.path
    try:
        frames = jpeg_frames(entry, template if kind == "frames" else None, short_side, quality)
    except DataError as e:
        return position, entry.path, entry.label, None, e.reason
    return position, video_id, entry.label, frames, None


class _ShardProgress:
    """Which shards of a split are finished: `SPLIT.progress/` beside the shards.

    The folder holds the options of the run (`options.json`), a shard being written
    (`SHARD.partial`), and for every finished shard `SHARD.msgpack`: its record count, its
    videos (list position, id, label, first record, frame count) and its failures. A shard is
    renamed into place before its `.msgpack` is written, so a `.msgpack` names a complete shard.
    """

    def __init__(self, output: str, split: str, options: dict, overwrite: bool):
        self.output, self.split = output, split
        self.folder = os.path.join(output, f"{split}.progress")
        options_path = os.path.join(self.folder, "options.json")
        if overwrite:
            shutil.rmtree(self.folder, ignore_errors=True)
            for path in records.shard_paths(output, split):
                os.remove(path)
        elif not os.path.isfile(options_path) and records.shard_paths(output, split):
            raise UserError(
                f"{output} holds shards of split '{split}' without progress records",
                hint="pass --overwrite to write the split again",
            )
        os.makedirs(self.folder, exist_ok=True)
        _check_options(options_path, options, overwrite)

    def _record(self, name: str) -> str:
        return os.path.join(self.folder, name + ".msgpack")

    def finished(self, name: str) -> dict | None:
        """The record of a finished shard without failures (None: to be written)."""
        path = self._record(name)
        if not (os.path.isfile(path) and os.path.isfile(os.path.join(self.output, name))):
            return None
        with open(path, "rb") as f:
            record = msgpack.unpackb(f.read())
        return None if record["failed"] else record

    def partial(self, name: str) -> str:
        return os.path.join(self.folder, name + PARTIAL)

    def finish(self, name: str, record: dict) -> None:
        os.replace(self.partial(name), os.path.join(self.output, name))
        storage.write_bytes(self._record(name), msgpack.packb(record))


def _list_digest(entries: Sequence[Entry]) -> str:
    text = "\n".join(f"{e.path} {e.num_frames} {e.label}" for e in entries)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_arrayrecord(args) -> None:
    entries = read_list(
        args.list,
        with_num_frames=args.kind == "frames",
        root=args.root,
        on_error="skip",
        max_bad_fraction=1.0,
    )
    # Video i of the list goes to shard i % num_shards, so a shard is known before it is written.
    num_shards = min(args.num_shards or max(1, len(entries) // 1000), len(entries))
    names = [records.shard_name(args.split, k, num_shards) for k in range(num_shards)]
    options = {
        "list": _list_digest(entries),
        "root": os.path.abspath(args.root) if args.root else "",
        "kind": args.kind,
        "num_shards": num_shards,
        "short_side": args.short_side,
        "quality": args.quality,
        "template": args.template,
    }
    os.makedirs(args.output, exist_ok=True)
    state = _ShardProgress(args.output, args.split, options, args.overwrite)
    shard_records = {k: state.finished(name) for k, name in enumerate(names)}
    shard_records = {k: r for k, r in shard_records.items() if r}
    todo = [k for k in range(num_shards) if k not in shard_records]
    jobs = [(i, entries[i]) for k in todo for i in range(k, len(entries), num_shards)]
    encode = functools.partial(
        _video_frames,
        root=args.root,
        kind=args.kind,
        short_side=args.short_side,
        quality=args.quality,
        template=args.template,
    )
    total_done = len(entries) - len(jobs)
    with _Progress(f"arrayrecord {args.split}", len(entries), total_done) as progress:
        writer, shard, record = None, None, None
        for position, video_id, label, frames, error in _run(
            encode, jobs, args.workers, ordered=True
        ):
            if position % num_shards != shard:
                if writer:
                    writer.close()
                    state.finish(names[shard], record)
                    shard_records[shard] = record
                shard = position % num_shards
                writer = records.shard_writer(state.partial(names[shard]))
                record = {"records": 0, "videos": [], "failed": []}
            if error:
                record["failed"].append([position, video_id, error])
                progress.update((video_id, error))
                continue
            for frame in frames:
                writer.write(frame)
            record["videos"].append([position, video_id, label, record["records"], len(frames)])
            record["records"] += len(frames)
            progress.update()
        if writer:
            writer.close()
            state.finish(names[shard], record)
            shard_records[shard] = record
    videos = sorted(
        (position, video_id, label, k, first, count)
        for k, r in shard_records.items()
        for position, video_id, label, first, count in r["videos"]
    )
    keys = ("id", "label", "shard", "first", "num_frames")
    columns = {key: [video[i + 1] for video in videos] for i, key in enumerate(keys)}
    counts = [shard_records[k]["records"] for k in range(num_shards)]
    records.write_index(args.output, args.split, names, counts, columns)
    _write_meta(args, entries, len(videos))
    failures = [(path, reason) for r in shard_records.values() for _, path, reason in r["failed"]]
    failures = _write_failures(os.path.join(args.output, f"{args.split}_failures.txt"), failures)
    failed = f" (listed in {failures}; a re-run retries them)" if failures else ""
    print(
        f"{progress.summary(len(entries))}{failed}; {len(videos)} videos in {num_shards} shards "
        f"of {records.index_path(args.output, args.split)}"
    )


def _write_meta(args, entries: Sequence[Entry], count: int) -> None:
    meta = (
        records.read_meta(args.output)
        if os.path.exists(os.path.join(args.output, "meta.json"))
        else {}
    )
    classes = copy_class_names(args.list, args.output)
    if classes:
        meta["classes"] = classes
    num_classes = args.num_classes or meta.get("num_classes") or len(meta.get("classes", ()))
    if not num_classes:
        num_classes = max(e.label for e in entries) + 1
        logging.warning("num_classes=%d from the largest label; pass --num_classes", num_classes)
    meta.update(
        num_classes=num_classes,
        splits={**meta.get("splits", {}), args.split: count},
        layouts={**meta.get("layouts", {}), args.split: records.FRAME_RECORDS},
    )
    records.write_meta(args.output, meta)


def write_lists(args) -> None:
    annotations = datasets.load(args.dataset, args.manual_dir, args.fold)
    os.makedirs(args.output, exist_ok=True)
    suffix = f"_split{args.fold}" if args.dataset in datasets.FOLDS else ""
    root = annotations.root
    # Frame folders stay where they were downloaded: their lists name them by absolute path.
    list_root = "" if annotations.frames else root
    for split, rows in annotations.splits.items():
        entries = [
            Entry(
                os.path.abspath(os.path.join(root, path)),
                label,
                datasets.count_frames(os.path.join(root, path)) if annotations.frames else None,
            )
            for path, label in rows
        ]
        missing = annotations.missing.get(split, ())
        list_path = os.path.join(args.output, f"{split}{suffix}.txt")
        write_list(list_path, entries, list_root)
        missing_path = os.path.join(args.output, f"{split}{suffix}_missing.txt")
        if missing:
            with open(missing_path, "w") as f:
                f.writelines(f"{name}\n" for name in missing)
            print(
                f"{split}: {len(entries)} videos in {list_path}; {len(missing)} annotated "
                f"video(s) not found (listed in {missing_path})"
            )
        else:
            if os.path.exists(missing_path):
                os.remove(missing_path)
            print(f"{split}: {len(entries)} videos in {list_path}")
    write_class_names(os.path.join(args.output, CLASSES_FILE), annotations.classes)
    if annotations.frames:
        where = f"absolute frame folder paths (template '{annotations.template}')"
    else:
        where = f"video paths relative to {root}"
    print(f"{len(annotations.classes)} classes (in {CLASSES_FILE}); {where}")


def build_tfds(args) -> None:
    from tea_jax.data import tfds_builders

    name = tfds_builders.build(
        args.dataset, args.manual_dir, args.data_dir, args.fold, args.workers
    )
    print(f"prepared {name}: set data.source='tfds', data.tfds_name='{name}'")


@cli.command
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    frames = commands.add_parser("frames", help="extract JPEG frame folders from videos")
    frames.add_argument("--list", required=True, help="video list (path label)")
    frames.add_argument("--root", default="", help="prefix of relative paths in the list")
    frames.add_argument("--output", required=True, help="root of the frame folders")
    frames.set_defaults(run=extract_frames)

    shards = commands.add_parser(
        "arrayrecord", help="ArrayRecord shards from frame folders or videos"
    )
    shards.add_argument(
        "--list", required=True, help="frame list (path num_frames label) or video list"
    )
    shards.add_argument("--kind", choices=("frames", "videos"), required=True)
    shards.add_argument("--root", default="", help="prefix of relative paths in the list")
    shards.add_argument("--template", default=FRAME_TEMPLATE, help="frame file names (1-based)")
    shards.add_argument("--output", required=True, help="output folder")
    shards.add_argument("--split", required=True, help="split name: train, val or test")
    shards.add_argument("--num_shards", type=int, default=0, help="0: one per 1000 videos")
    shards.add_argument("--num_classes", type=int, default=0, help="0: from meta.json or labels")
    shards.set_defaults(run=build_arrayrecord)

    for command in (frames, shards):
        command.add_argument(
            "--short_side",
            type=int,
            default=None,
            help="resize frames (default: keep; frame folders are then copied byte for byte)",
        )
        command.add_argument("--quality", type=int, default=90, help="JPEG quality")
        command.add_argument("--workers", type=int, default=os.cpu_count(), help="processes")
        command.add_argument(
            "--overwrite",
            action="store_true",
            help="write every video again (default: keep what an earlier run finished)",
        )

    lists = commands.add_parser("lists", help="list files from official annotation files")
    lists.add_argument("--dataset", choices=datasets.NAMES, required=True)
    lists.add_argument("--manual_dir", required=True, help="the downloaded dataset")
    lists.add_argument("--fold", type=int, default=1, help="UCF101/HMDB51 split (1-3)")
    lists.add_argument("--output", required=True, help="folder for the list files")
    lists.set_defaults(run=write_lists)

    tfds = commands.add_parser("tfds", help="TFDS dataset (ArrayRecord) from manual_dir")
    tfds.add_argument("--dataset", choices=datasets.NAMES, required=True)
    tfds.add_argument("--manual_dir", required=True, help="the downloaded dataset")
    tfds.add_argument("--fold", type=int, default=1, help="UCF101/HMDB51 split (1-3)")
    tfds.add_argument("--data_dir", default=None, help="TFDS data_dir (default: TFDS's)")
    tfds.add_argument("--workers", type=int, default=os.cpu_count(), help="processes")
    tfds.set_defaults(run=build_tfds)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args.run(args)


if __name__ == "__main__":
    main()
