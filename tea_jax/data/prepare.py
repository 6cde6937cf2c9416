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
"""

import argparse
import functools
import logging
import multiprocessing
import os

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
from tea_jax.data.video import decode_video

FRAME_TEMPLATE = "img_{:05d}.jpg"


def _extract(entry: Entry, root: str, output: str, short_side: int | None, quality: int):
    relative = os.path.splitext(os.path.relpath(entry.path, root))[0].replace(" ", "_")
    folder = os.path.join(output, relative)
    try:
        frames = decode_video(entry.path, short_side)
    except DataError as e:
        return None, str(e)
    os.makedirs(folder, exist_ok=True)
    for index, frame in enumerate(frames):
        with open(os.path.join(folder, FRAME_TEMPLATE.format(index + 1)), "wb") as f:
            f.write(records.encode_jpeg(frame, quality))
    return Entry(folder, entry.label, len(frames)), None


def _video_frames(
    entry: Entry, root: str, kind: str, short_side: int | None, quality: int, template: str
):
    """((id, label, JPEG frames), None) of one video, or (None, error)."""
    video_id = os.path.relpath(entry.path, root) if root else entry.path
    try:
        frames = jpeg_frames(entry, template if kind == "frames" else None, short_side, quality)
    except DataError as e:
        return None, str(e)
    return (video_id, entry.label, frames), None


def _run(function, entries, workers):
    """Yields the results of `function` over entries in order, logging the failures."""
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from _logged(pool.imap(function, entries, chunksize=4))
    else:
        yield from _logged(map(function, entries))


def _logged(results):
    for result, error in results:
        if error:
            logging.warning("skipped %s", error)
        yield result


def extract_frames(args) -> None:
    entries = read_list(
        args.list, with_num_frames=False, root=args.root, on_error="skip", max_bad_fraction=1.0
    )
    extract = functools.partial(
        _extract,
        root=args.root,
        output=args.output,
        short_side=args.short_side,
        quality=args.quality,
    )
    done = [entry for entry in _run(extract, entries, args.workers) if entry]
    list_path = os.path.join(args.output, os.path.basename(args.list))
    write_list(list_path, done, args.output)
    copy_class_names(args.list, args.output)
    print(f"extracted {len(done)} of {len(entries)} videos; frame list {list_path}")


def build_arrayrecord(args) -> None:
    entries = read_list(
        args.list,
        with_num_frames=args.kind == "frames",
        root=args.root,
        on_error="skip",
        max_bad_fraction=1.0,
    )
    encode = functools.partial(
        _video_frames,
        root=args.root,
        kind=args.kind,
        short_side=args.short_side,
        quality=args.quality,
        template=args.template,
    )
    num_shards = min(args.num_shards or max(1, len(entries) // 1000), len(entries))
    with records.FrameRecordWriter(args.output, args.split, num_shards) as writer:
        for video in _run(encode, entries, args.workers):
            if video:
                writer.write(*video)
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
        splits={**meta.get("splits", {}), args.split: writer.count},
        layouts={**meta.get("layouts", {}), args.split: records.FRAME_RECORDS},
    )
    records.write_meta(args.output, meta)
    print(
        f"wrote {writer.count} of {len(entries)} videos into {num_shards} shards in {args.output}"
    )


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
        write_list(os.path.join(args.output, f"{split}{suffix}.txt"), entries, list_root)
        print(f"{split}: {len(entries)} videos")
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
