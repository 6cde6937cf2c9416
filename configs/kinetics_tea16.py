"""TEA with 16 frames on Kinetics-400 (paper Table 3), from ImageNet Res2Net-50.

The recipe is `configs/default.py`'s. The data are the frame folders and lists written by the
preparation commands of docs/data.md::

  python -m tea_jax.data.prepare lists --dataset kinetics400 --manual_dir ~/datasets/kinetics400 \\
      --output data/kinetics400
  python -m tea_jax.data.prepare frames --list data/kinetics400/train.txt \\
      --root ~/datasets/kinetics400 --output data/kinetics400/frames --short_side 256
  python -m tea_jax.data.prepare frames --list data/kinetics400/val.txt \\
      --root ~/datasets/kinetics400 --output data/kinetics400/frames --short_side 256
  python -m tea_jax.convert res2net50 --input res2net50_26w_4s-06e79181.pth \\
      --output pretrained/res2net50_26w_4s
  python train.py --config configs/kinetics_tea16.py --workdir runs/kinetics_tea16
"""

from configs import default as default_lib


def get_config():
    config = default_lib.get_config()
    config.num_segments = 16
    config.init_from = "pretrained/res2net50_26w_4s"

    config.data.source = "frames"
    config.data.root = "data/kinetics400/frames"
    config.data.train_list = "train.txt"
    config.data.val_list = "val.txt"
    config.data.num_classes = 400

    config.log_every_steps = 100
    return config
