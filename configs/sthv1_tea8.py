"""TEA with 8 frames on Something-Something V1 (paper Table 2), from ImageNet Res2Net-50.

The Kinetics recipe with Something-Something's data and optimiser settings: the classes need
temporal order, so there is no horizontal flip; the learning rate is 0.02 and the weight decay
5e-4 for a batch of 64. Frames are ``00001.jpg`` ... with list files ``path num_frames label``.
"""

from configs import kinetics_tea16


def get_config():
    config = kinetics_tea16.get_config()
    config.num_segments = 8

    config.data.root = "data/something-something-v1"
    config.data.template = "{:05d}.jpg"
    config.data.num_classes = 174
    config.data.flip = False

    config.optim.lr = 0.02
    config.optim.weight_decay = 5e-4
    return config
