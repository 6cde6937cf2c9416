"""TSN (a Res2Net without temporal modelling) on the synthetic motion dataset.

The same reduced skeleton, data and budget as ``synthetic_tea8.py``: averaging per-frame
predictions cannot tell a video from its time reversal, so TSN stays near chance on the pairs.
"""

from configs import synthetic_tea8


def get_config():
    return synthetic_tea8.get_config("tsn_res2net50")
