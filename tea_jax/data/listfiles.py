"""List files of the TSN/TSM/TEA code: one video per line.

Frame folders: `path num_frames label`; video files: `path label`; fields separated by whitespace.
The numbers are the last fields, so a path may contain single spaces (the class folders of the
ActivityNet Kinetics downloader, e.g. `train/playing cello/...mp4`); frame folders written by the
preparation CLIs have underscores instead. Paths are absolute or relative to a root. Blank lines
and lines starting with `#` are ignored.
"""

import dataclasses
import logging
import os

from tea_jax import storage
from tea_jax.data.errors import DataError, ListFileError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
# The section of docs/data.md with the commands that write the lists of each dataset.
PREPARE_DOCS = "docs/data.md#preparing-ucf101-hmdb51-kinetics-400-something-something-v1v2"
# Class names, one per line, line i naming label i: written beside the lists by
# `tea_jax.data.prepare`, copied beside exported models.
CLASSES_FILE = "classes.txt"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One video of a list.

    Attributes:
      path: absolute path of the frame folder or video file.
      label: class index.
      num_frames: frames in the folder (frame lists only).
    """

    path: str
    label: int
    num_frames: int | None = None


def _parse_line(line: str, with_num_frames: bool, root: str, num_classes: int | None) -> Entry:
    fields = line.split()
    expected = "path num_frames label" if with_num_frames else "path label"
    numbers = expected.count(" ")
    # More fields: a path with spaces, unless the field before the numbers is one too.
    if len(fields) < numbers + 1 or (
        len(fields) > numbers + 1 and fields[-numbers - 1].lstrip("-").isdigit()
    ):
        raise ValueError(f"expected '{expected}', got {len(fields)} field(s)")
    if len(fields) > numbers + 1:  # a path with spaces
        fields = [" ".join(fields[:-numbers]), *fields[-numbers:]]
    try:
        numbers = [int(f) for f in fields[1:]]
    except ValueError:
        raise ValueError(f"expected integers after the path, got {fields[1:]}") from None
    label = numbers[-1]
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise ValueError(f"label {label} outside [0, {num_classes})")
    num_frames = numbers[0] if with_num_frames else None
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames {num_frames} < 1")
    return Entry(storage.join(root, fields[0]), label, num_frames)


def _missing_list_hint(list_path: str, with_num_frames: bool) -> str:
    """The documented command that writes ``list_path``, in docs/data.md's layout: ``prepare
    lists`` writes the lists of DIR (video lists, or the frame lists of Something-Something V1's
    downloaded frames), ``prepare frames`` the frame folders and their lists in DIR/frames."""
    folder, _, name = list_path.rpartition("/")
    parent, _, folder_name = folder.rpartition("/")
    folder = folder or "."
    if with_num_frames and folder_name == "frames":
        command = (
            f"python -m tea_jax.data.prepare frames --list {parent or '.'}/{name} "
            f"--root VIDEO_DIR --output {folder} --short_side 256"
        )
        return f"write it with `{command}`, after `prepare lists` ({PREPARE_DOCS})"
    command = (
        f"python -m tea_jax.data.prepare lists --dataset NAME --manual_dir DOWNLOAD_DIR "
        f"--output {folder}"
    )
    return f"write it with `{command}` ({PREPARE_DOCS})"


def _format_hint(line: str, with_num_frames: bool) -> str | None:
    """The source that reads ``line`` when it is a line of the other kind of list."""
    fields = line.split()
    names_video = fields and fields[0].lower().endswith(VIDEO_EXTENSIONS)
    if with_num_frames and len(fields) == 2 and names_video:
        return "this is a list of video files (path label): --config.data.source=videos reads it"
    if not with_num_frames and len(fields) == 3 and not names_video:
        return (
            "this is a list of frame folders (path num_frames label): "
            "--config.data.source=frames reads it"
        )
    return None


def read_list(
    list_path: str,
    *,
    with_num_frames: bool,
    root: str = "",
    num_classes: int | None = None,
    on_error: str = "raise",
    max_bad_fraction: float = 0.01,
) -> list[Entry]:
    """Parses a list file.

    Args:
      list_path: the list file.
      with_num_frames: `path num_frames label` lines (frame folders) instead of `path label`.
      root: prefix of relative paths.
      num_classes: labels must lie in [0, num_classes) (not checked when None).
      on_error: 'raise' stops at the first bad line; 'skip' logs and drops bad lines.
      max_bad_fraction: with 'skip', more bad lines than this fraction of all lines is an error.

    Returns:
      The entries, in file order.

    Raises:
      ListFileError: a bad line (with 'raise'), or too many (with 'skip'); names `file:line`.
      DataError: the list file cannot be read.
    """
    try:
        lines = storage.read_text(list_path).splitlines()
    except OSError as e:
        hint = None if storage.exists(list_path) else _missing_list_hint(list_path, with_num_frames)
        raise DataError(list_path, f"cannot read list file ({e.strerror or e})", hint) from None
    entries, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(_parse_line(line, with_num_frames, root, num_classes))
        except ValueError as e:
            error = ListFileError(
                f"{list_path}:{number}", f"{e}: {line!r}", _format_hint(line, with_num_frames)
            )
            if on_error == "raise":
                raise error from None
            bad.append(error)
    if len(bad) > max_bad_fraction * (len(entries) + len(bad)):
        raise ListFileError(
            bad[0].path,
            f"{len(bad)} of {len(entries) + len(bad)} lines are bad, more than "
            f"max_bad_fraction={max_bad_fraction}; first: {bad[0].reason}",
            bad[0].hint,
        )
    for error in bad:
        logging.warning("skipping %s", error)
    if not entries:
        raise DataError(list_path, "list file has no entries")
    return entries


def class_folder_videos(root: str) -> tuple[list[Entry], list[str]]:
    """Videos in one sub-folder per class, classes sorted by name.

    Returns:
      (entries, class_names).
    """
    if not os.path.isdir(root):
        raise DataError(root, "video folder does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    entries = [
        Entry(os.path.join(root, name, file), label)
        for label, name in enumerate(classes)
        for file in sorted(os.listdir(os.path.join(root, name)))
        if file.lower().endswith(VIDEO_EXTENSIONS)
    ]
    if not entries:
        raise DataError(root, f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in class folders")
    return entries, classes


def write_list(list_path: str, entries: list[Entry], root: str = "") -> None:
    """Writes entries as a list file (whole: a reader never sees a part), paths relative to
    `root` when under it."""
    lines = []
    for e in entries:
        path = os.path.relpath(e.path, root) if root else e.path
        counts = f"{e.num_frames} " if e.num_frames is not None else ""
        lines.append(f"{path} {counts}{e.label}\n")
    storage.write_text(list_path, "".join(lines))


def read_class_names(path: str) -> list[str]:
    """Class names of a `classes.txt`-style file, one per line, blank lines ignored.

    Raises:
      DataError: the file cannot be read or names no class.
    """
    try:
        names = [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]
    except OSError as e:
        raise DataError(path, f"cannot read class names ({e.strerror or e})") from None
    if not names:
        raise DataError(path, "class names file is empty")
    return names


def write_class_names(path: str, names: list[str]) -> None:
    """Writes class names one per line, line i naming label i."""
    with open(path, "w") as f:
        f.writelines(f"{name}\n" for name in names)


def copy_class_names(list_path: str, output: str) -> list[str] | None:
    """Copies the `classes.txt` beside a list file into `output`; its names, or None if absent."""
    source = os.path.join(os.path.dirname(os.path.abspath(list_path)), CLASSES_FILE)
    if not os.path.isfile(source):
        return None
    names = read_class_names(source)
    target = os.path.join(output, CLASSES_FILE)
    if os.path.abspath(target) != source:
        write_class_names(target, names)
    return names
