"""TEA with 8 frames on Kinetics-400 (paper Table 3); the 16-frame recipe with T = 8."""

from configs import kinetics_tea16


def get_config():
    config = kinetics_tea16.get_config()
    config.num_segments = 8
    return config
