"""TEA with 8 frames on Something-Something V1 (paper Table 2), from ImageNet Res2Net-50.

The Kinetics recipe (`configs/default.py`) with Something-Something's data and optimiser
settings: the classes need temporal order, so there is no horizontal flip; the learning rate is
0.02 and the weight decay 5e-4 for a batch of 64. The data are the released frame folders
(``00001.jpg`` ...) with the lists of ``python -m tea_jax.data.prepare lists --dataset
something_something_v1 --manual_dir ~/datasets/something-something-v1 --output
data/something-something-v1`` (absolute frame folder paths, classes in alphabetical order).
"""

from configs import default as default_lib


def get_config():
    config = default_lib.get_config()
    config.init_from = "pretrained/res2net50_26w_4s"

    config.data.source = "frames"
    config.data.root = "data/something-something-v1"
    config.data.train_list = "train.txt"
    config.data.val_list = "val.txt"
    config.data.template = "{:05d}.jpg"
    config.data.num_classes = 174
    config.data.flip = False

    config.optim.lr = 0.02
    config.optim.weight_decay = 5e-4
    config.log_every_steps = 100
    return config
