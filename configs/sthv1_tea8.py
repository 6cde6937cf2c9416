"""TEA with 8 frames on Something-Something V1 (paper Table 2), from ImageNet Res2Net-50.

Something-Something needs temporal order, so there is no horizontal flip; the learning rate is
0.02 and the weight decay 5e-4 for a batch of 64. Frames are ``00001.jpg`` ... with list files
``path num_frames label``.
"""

from configs import default as default_lib


def get_config():
    config = default_lib.get_config()
    config.model = "tea50"
    config.num_segments = 8
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
    config.checkpoint_every_steps = 1000
    return config
