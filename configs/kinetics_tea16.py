"""TEA with 16 frames on Kinetics-400 (paper Table 3), from ImageNet Res2Net-50.

Frames extracted TSN-style (``img_00001.jpg`` ...) with list files ``path num_frames label``.
``init_from`` expects the converted ImageNet weights::

  python -m tea_jax.convert res2net50 --input res2net50_26w_4s-06e79181.pth \\
      --output pretrained/res2net50_26w_4s
  python train.py --config configs/kinetics_tea16.py --workdir runs/kinetics_tea16 \\
      --config.data.root=/data/kinetics400/frames
"""

from configs import default as default_lib


def get_config():
    config = default_lib.get_config()
    config.model = "tea50"
    config.num_segments = 16
    config.init_from = "pretrained/res2net50_26w_4s"

    config.data.source = "frames"
    config.data.root = "data/kinetics400"
    config.data.train_list = "train.txt"
    config.data.val_list = "val.txt"
    config.data.template = "img_{:05d}.jpg"
    config.data.num_classes = 400
    config.data.flip = True

    config.optim.lr = 0.01
    config.optim.weight_decay = 1e-4
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    return config
