"""Data options."""

import dataclasses

import ml_collections

# The splits a split is read from, in order: UCF101 and HMDB51 have no val split, others no
# labelled test split.
SPLIT_FALLBACK = {"val": ("val", "test"), "test": ("test", "val")}


def split_candidates(split: str) -> tuple[str, ...]:
    """The splits that can stand for `split`, preferred first."""
    return SPLIT_FALLBACK.get(split, (split,))


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
    """Options of the generator; the defaults give a task the reduced TEA learns in minutes.

    Attributes:
      task: 'motion', 'clutter' or 'order' (see `tea_jax.data.synthetic`). `min_frames`,
        `max_frames`, `speed`, `orbit` and `growth` shape the motion task only; the other two
        tasks fix their parameters in `tea_jax.data.synthetic`.
      seed: every video is a deterministic function of (seed, split, index).
      num_train: training videos (a multiple of 8 keeps the classes balanced).
      num_val: validation videos.
      size: frame height and width in pixels (even).
      min_frames: shortest video.
      max_frames: longest video.
      texture_amplitude: amplitude of the static low-frequency background texture, in [0, 1].
      speed: (min, max) translation in pixels per frame.
      orbit: (min, max) angle, in radians, that a circling shape travels over the whole video.
        Per video rather than per frame: TSN samples the same number of frames from every
        video, so the step between sampled frames (~0.75 rad, ~10 px for 8 frames) does not
        depend on the video's length.
      growth: (min, max) relative size increase per frame.
    """

    task: str = "motion"
    seed: int = 0
    num_train: int = 1600
    num_val: int = 400
    size: int = 64
    min_frames: int = 16
    max_frames: int = 24
    texture_amplitude: float = 0.04
    speed: tuple[float, float] = (2.0, 3.0)
    orbit: tuple[float, float] = (5.6, 6.2)
    growth: tuple[float, float] = (0.05, 0.07)


# The generator options that `default_config().synthetic` exposes, with the dataclass's defaults.
SYNTHETIC_CONFIG_KEYS = ("task", "seed", "num_train", "num_val", "size", "texture_amplitude")


def default_config() -> ml_collections.ConfigDict:
    """Every data option with its default (the paper's Kinetics/ImageNet-style setting).

    Sources and where they read from:
      source: 'synthetic' | 'frames' | 'videos' | 'arrayrecord' | 'tfds'.
      root: 'synthetic': where the dataset is generated (or reused); 'frames'/'videos': prefix of
        relative paths in list files ('videos' without list files: one sub-folder per class);
        'arrayrecord': the folder written by `tea_jax.data.prepare`.
      train_list, val_list, test_list: list files (relative to `root` or absolute) for 'frames'
        (`path num_frames label`) and 'videos' (`path label`); a missing test list uses val and
        a missing val list test (`split_candidates`, for every source).
      template: frame file names, 1-based: Something-Something V1 '{:05d}.jpg', V2
        '{:06d}.jpg', Kinetics/UCF101/HMDB51 'img_{:05d}.jpg' (or 'image_{:05d}.jpg').
      tfds_name: e.g. 'ucf101_jpeg/split1', 'hmdb51_jpeg/split2', 'kinetics400_jpeg',
        'something_something_v2_jpeg' (written by `prepare tfds`).
      tfds_data_dir: TFDS data_dir (None: TFDS's default).
      num_classes: None: taken from the dataset (synthetic, class folders, ArrayRecord meta,
        TFDS info); required for list files.
      synthetic: options of `SyntheticOptions` (seed, num_train, ...).

    Sampling and augmentation:
      dense_sampling: one 64-frame window with stride 64 // T instead of TSN segments.
      image_size: side of training crops and of the efficient protocol's centre crop.
      short_side: frames are (virtually) resized to this short side before cropping; None keeps
        the stored size for training (TSN's behaviour on frames stored at short side 256).
      scales: multi-scale crop scales; max_distort: width/height scale indices may differ by this.
      flip: random horizontal flip in training (off for Something-Something).
      flip_label_pairs: label pairs exchanged when a clip is flipped, e.g. ((86, 87),); with the
        synthetic source and flip on, its left/right and rotation pairs are used when empty.
      test_clips, test_crops: evaluation views when `create_loader` gets no protocol (crops 1:
        centre crop of `image_size`; 3: three `three_crop_size` squares along the long side).
      three_crop_size: None: `short_side`.
      test_clip_sampling: several test clips are 'random' TSN training clips (the released
        code's and the paper's accuracy protocol; seeded by the run's seed and the video's index,
        so reproducible and the same on every host) or 'fixed' offsets (c + 0.5) / K of each
        segment. A single clip always takes the segment centres.

    Pipeline and bad input:
      num_workers: grain worker processes (0: decode in the main process).
      worker_buffer_size: batches each worker prepares ahead.
      on_error: 'raise' | 'skip' | None (None: 'skip' for training, 'raise' for evaluation).
      max_bad_fraction: with 'skip', more bad examples than this fraction of a host's share of
        the split (or of a list file's lines) stops the run.
    """
    cfg = ml_collections.ConfigDict()
    cfg.source = "synthetic"
    cfg.root = "data/synthetic"
    cfg.train_list = ""
    cfg.val_list = ""
    cfg.test_list = ""
    cfg.template = "img_{:05d}.jpg"
    cfg.tfds_name = ""
    cfg.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)
    cfg.num_classes = ml_collections.FieldReference(None, field_type=int)
    defaults = SyntheticOptions()
    cfg.synthetic = ml_collections.ConfigDict(
        {key: getattr(defaults, key) for key in SYNTHETIC_CONFIG_KEYS}
    )

    cfg.dense_sampling = False
    cfg.image_size = 224
    cfg.short_side = ml_collections.FieldReference(256, field_type=int)
    cfg.scales = (1.0, 0.875, 0.75, 0.66)
    cfg.max_distort = 1
    cfg.flip = True
    cfg.flip_label_pairs = ()
    cfg.test_clips = 1
    cfg.test_crops = 1
    cfg.three_crop_size = ml_collections.FieldReference(None, field_type=int)
    cfg.test_clip_sampling = "random"

    cfg.num_workers = 4
    cfg.worker_buffer_size = 2
    cfg.on_error = ml_collections.FieldReference(None, field_type=str)
    cfg.max_bad_fraction = 0.01
    return cfg


def synthetic_config(root: str = "data/synthetic") -> ml_collections.ConfigDict:
    """`default_config` for the synthetic motion dataset: 64x64 frames, 8 classes.

    Flipping stays on: with the synthetic source, a flip exchanges the labels of the task's
    mirrored classes (left/right, clockwise/counter-clockwise, east/west, ...).
    """
    cfg = default_config()
    cfg.source, cfg.root = "synthetic", root
    cfg.image_size = cfg.short_side = cfg.synthetic.size
    return cfg
