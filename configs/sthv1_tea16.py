"""TEA with 16 frames on Something-Something V1 (paper Table 2)."""

from configs import sthv1_tea8


def get_config():
    config = sthv1_tea8.get_config()
    config.num_segments = 16
    return config
