"""The synthetic clutter task: fine motion over a shaking textured background.

  python train.py --config configs/synthetic_clutter.py[:MODEL] --workdir runs/clutter_tea8

8 classes (the directions of a small shape's 1-1.25 pixel-per-frame motion relative to the
background) in time-reversed pairs, 32x32 frames, generated into ``data/synthetic_clutter`` on
first use; the recipe and budget of ``synthetic_tea8.py``, on its skeleton with two blocks in
stages 3 and 4: Res2Net's hierarchical residual, which makes MTA a cascade, exists only from the
second block of a stage, so a one-block-per-stage MTA has no cascade.
"""

from configs import synthetic_tea8


def get_config(model="tea50"):
    config = synthetic_tea8.get_config(model)
    config.model_options.stage_sizes = (1, 1, 2, 2)
    config.data.root = "data/synthetic_clutter"
    config.data.synthetic.update(task="clutter", size=32)
    config.data.image_size = config.data.short_side = 32
    return config
