"""TEA with 16 frames on Something-Something V2 (paper Table 4): the V1 recipe on V2's videos.

The webm videos are extracted into frame folders by the commands of docs/data.md (``prepare lists``,
then ``prepare frames --output data/something-something-v2/frames``), named ``img_00001.jpg``.
"""

from configs import sthv1_tea8


def get_config():
    config = sthv1_tea8.get_config()
    config.num_segments = 16
    config.data.root = "data/something-something-v2/frames"
    config.data.template = "img_{:05d}.jpg"
    return config
