"""The synthetic order task: did the frame brighten before it darkened, or after?

  python train.py --config configs/synthetic_order.py[:MODEL] --workdir runs/order_tea32

2 classes that are time reversals of each other, 32-frame videos of 16x16 pixels generated into
``data/synthetic_order`` on first use. All 32 frames are sampled. The recipe and budget are those
of ``synthetic_tea8.py``; its skeleton gets two blocks in stages 3 and 4 (so that MTA's cascade
exists: Res2Net's hierarchical residual starts at the second block of a stage) and temporal
modules in those stages only. One temporal convolution per block (TSM, (2+1)D) then reaches +-4
frames and MTA +-8 (`tests/test_models.py::test_temporal_reach`). In half of the videos the two
events are adjacent; in the others the second starts 4-11 frames after the first, and both stay
at least 8 frames from either end.
"""

from configs import synthetic_tea8


def get_config(model="tea50"):
    config = synthetic_tea8.get_config(model)
    config.num_segments = 32
    config.model_options.update(stage_sizes=(1, 1, 2, 2), temporal_stages=(3, 4))
    config.data.root = "data/synthetic_order"
    config.data.synthetic.update(task="order", size=16)
    config.data.image_size = config.data.short_side = 16
    return config
