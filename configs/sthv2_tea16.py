"""TEA with 16 frames on Something-Something V2 (paper Table 4): the V1 recipe on V2's frames."""

from configs import sthv1_tea8


def get_config():
    config = sthv1_tea8.get_config()
    config.num_segments = 16
    config.data.root = "data/something-something-v2"
    config.data.template = "{:06d}.jpg"
    return config
