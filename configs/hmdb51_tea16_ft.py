"""Fine-tunes a Kinetics TEA-16 on HMDB51 split 1 (paper Table 5); the UCF101 recipe."""

from configs import ucf101_tea16_ft


def get_config():
    config = ucf101_tea16_ft.get_config()
    config.data.root = "data/hmdb51/frames"
    config.data.num_classes = 51
    return config
