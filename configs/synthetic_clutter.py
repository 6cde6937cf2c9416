"""The synthetic clutter task: fine motion over a shaking, panning textured background.

  python train.py --config configs/synthetic_clutter.py[:MODEL] --workdir runs/clutter_tea8

8 classes (the directions of a small shape's 1-2 pixel-per-frame motion relative to the
background) in time-reversed pairs, 64x64 frames, generated into ``data/synthetic_clutter`` on
first use; the reduced network, recipe and budget of ``synthetic_tea8.py``.
"""

from configs import synthetic_tea8


def get_config(model="tea50"):
    config = synthetic_tea8.get_config(model)
    config.data.root = "data/synthetic_clutter"
    config.data.synthetic.task = "clutter"
    return config
