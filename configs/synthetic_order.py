"""The synthetic order task: which of two brief events 4-14 frames apart came first.

  python train.py --config configs/synthetic_order.py[:MODEL] --workdir runs/order_tea32

2 classes (a shape flashes before another one swells, or after) that are time reversals of each
other, 32-frame videos of 32x32 pixels generated into ``data/synthetic_order`` on first use. All
32 frames are sampled, so the clip costs what an 8-frame 64x64 clip does; the reduced network,
recipe and budget of ``synthetic_tea8.py``.
"""

from configs import synthetic_tea8


def get_config(model="tea50"):
    config = synthetic_tea8.get_config(model)
    config.num_segments = 32
    config.data.root = "data/synthetic_order"
    config.data.synthetic.update(task="order", size=32)
    config.data.image_size = config.data.short_side = 32
    return config
