"""Labels video files with a trained model: whole videos, windows over a long one, or many.

  python -m tea_jax.predict --checkpoint runs/synthetic_tea8/model data/synthetic/val/00000_a.mp4
  python -m tea_jax.predict --checkpoint CKPT --labels kinetics_classes.txt --clips 10 a.mp4 b.mp4
  python -m tea_jax.predict --checkpoint CKPT long.mp4 --window 2.0 --stride 1.0 \\
      --output windows.jsonl --timeline timeline.png --mp4 labelled.mp4 [--smooth 5]
  python -m tea_jax.predict --checkpoint CKPT --list videos.txt --output predictions.jsonl

``--checkpoint`` is a model checkpoint (``WORKDIR/model`` exported by ``train.py`` or the output
of ``python -m tea_jax.convert``). Each video is read exactly as evaluation reads it
(``tea_jax.data.pipeline.EvalReader``): one TSN clip of segment centres, or ``--clips`` random
TSN clips (seeded), resized to ``--short-side`` and centre-cropped to ``--image-size``; the views'
logits are averaged, as in the released code, and shown as softmax probabilities. Sizes and class
names default to the ones ``train.py`` stored beside the exported model (``preprocess.json``,
``classes.txt``).

With ``--window``, one video is scored in windows of that many seconds every ``--stride``
seconds, each as evaluation scores a video cut to the window (``tea_jax.long_video``). With
``--list`` (or a folder as the video), every video of the list is labelled, decoded in
``--workers`` processes, into ``--output`` (``tea_jax.video_lists``).
"""

import argparse
import sys
from collections.abc import Sequence

from tea_jax import cli, long_video, storage, video_lists
from tea_jax.data.errors import DataError
from tea_jax.errors import ConfigError
from tea_jax.predictor import Predictor


def _whole_videos(predictor: Predictor, videos: list[str], top_k: int) -> None:
    failed = 0
    for path in videos:
        try:
            top = predictor(path, top_k)
        except DataError as e:
            print(f"{path}: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(path)
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {name:<40} {100 * prob:6.2f}%")
    if failed:
        sys.exit(f"{failed} of {len(videos)} videos could not be read.")


def _check(args: argparse.Namespace, many: bool) -> None:
    """Settings errors, before the model is loaded."""
    if args.window and (many or len(args.videos) != 1):
        raise ConfigError(f"--window scores one video file, got {args.list or args.videos}")
    if many and len([args.list] if args.list else args.videos) != 1:
        raise ConfigError("give one list file (--list) or one folder, without other videos")
    if many and not args.output:
        raise ConfigError(
            "many videos need --output (the results file; a re-run skips its videos)",
            hint="add --output predictions.jsonl (or .csv)",
        )


def _windows(predictor: Predictor, args: argparse.Namespace) -> None:
    scores = long_video.score_windows(
        predictor,
        args.videos[0],
        window=args.window,
        stride=args.stride or args.window,
        smoothing=args.smooth,
        progress=True,
    )
    records = long_video.window_records(scores, predictor.names, args.top_k, args.scores)
    long_video.write_records(args.output, records)
    if args.timeline:
        from tea_jax.timeline import plot_timeline  # matplotlib only when drawing

        plot_timeline(scores, predictor.names, args.timeline)
    if args.mp4:
        long_video.write_labelled_video(scores, predictor.names, args.mp4)


def _many(predictor: Predictor, args: argparse.Namespace) -> None:
    paths = video_lists.video_paths(args.list or args.videos[0], args.root)
    output = video_lists.Output(args.output, args.top_k, args.scores)
    skipped = len(output.done)
    try:
        scored, failed = video_lists.predict_videos(predictor, paths, output, workers=args.workers)
    except KeyboardInterrupt:
        sys.exit(f"interrupted: the results so far are in {args.output}; the same command resumes.")
    print(
        f"{scored} videos scored, {skipped} already in {args.output}, {len(failed)} failed",
        file=sys.stderr,
    )
    for path, reason in failed.items():
        print(f"  {path}: {reason}", file=sys.stderr)
    if failed:
        sys.exit(f"{len(failed)} of {len(paths)} videos could not be read (a re-run retries them).")


@cli.command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="model checkpoint directory")
    parser.add_argument("--labels", help="class names, one per line")
    parser.add_argument("--image-size", type=int, help="crop side (default: as trained, or 224)")
    parser.add_argument("--short-side", type=int, help="resize short side (default: as trained)")
    parser.add_argument("--clips", type=int, default=1, help="clips averaged per video")
    parser.add_argument("--seed", type=int, default=0, help="draws the clips when --clips > 1")
    parser.add_argument("--top-k", type=int, default=5, help="classes listed per result")
    parser.add_argument("--batch", type=int, default=8, help="windows or videos per model call")
    parser.add_argument("--window", type=float, help="score windows of this many seconds")
    parser.add_argument("--stride", type=float, help="seconds between windows (default: --window)")
    parser.add_argument(
        "--smooth", type=int, default=1, help="moving average of probabilities over N windows"
    )
    parser.add_argument(
        "--output", help="results: JSON lines per window (default stdout) or per video (.csv: CSV)"
    )
    parser.add_argument("--timeline", help="with --window: the timeline picture (PNG)")
    parser.add_argument("--mp4", help="with --window: the video with its labels drawn on")
    parser.add_argument("--scores", action="store_true", help="also write every probability")
    parser.add_argument("--list", help="a list file of videos (lines 'path' or 'path label')")
    parser.add_argument("--root", default="", help="prefix of relative paths in --list")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes for many videos")
    parser.add_argument("videos", nargs="*", help="video files, or one folder of videos")
    args = parser.parse_args(argv)
    many = bool(args.list) or any(storage.isdir(v) for v in args.videos)
    if not many and not args.videos:
        parser.error("give video files, a folder or --list")
    _check(args, many)
    predictor = Predictor(
        args.checkpoint,
        labels=args.labels,
        image_size=args.image_size,
        short_side=args.short_side,
        num_clips=args.clips,
        seed=args.seed,
        batch_size=args.batch if (many or args.window) else 1,
    )
    if args.window:
        _windows(predictor, args)
    elif many:
        _many(predictor, args)
    else:
        _whole_videos(predictor, args.videos, args.top_k)


if __name__ == "__main__":
    main()
