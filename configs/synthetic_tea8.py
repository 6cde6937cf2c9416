"""A reduced TEA on the synthetic motion dataset: the CPU-sized first run.

  python train.py --config configs/synthetic_tea8.py --workdir runs/synthetic_tea8

The dataset (8 classes in time-reversed pairs, 64x64 frames) is generated into ``data/synthetic``
on first use. The network keeps TEA's blocks with one block per stage and a quarter of the width;
it trains from scratch with AdamW and a cosine schedule. The config argument picks another model
of the registry on the same skeleton and budget, e.g. ``configs/synthetic_tea8.py:tsm_resnet50``.
"""

from configs import default as default_lib
from tea_jax import data


def get_config(model="tea50"):
    config = default_lib.get_config()
    config.model = model
    config.num_segments = 8
    config.model_options.update(dropout_rate=0.0, stage_sizes=(1, 1, 1, 1), width_multiplier=0.25)
    config.data = data.synthetic_config()
    config.data.num_workers = 1

    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_epochs = 5
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100

    config.optim.name = "adamw"
    config.optim.lr = 1e-3
    config.optim.lr_batch_size = 16
    config.optim.weight_decay = 1e-4
    config.optim.schedule = "cosine"
    config.optim.warmup_epochs = 0.2
    config.optim.clip_norm = 0.0
    config.optim.bias_lr_mult = 1.0
    config.optim.classifier_lr_mult = 1.0
    config.optim.classifier_bias_lr_mult = 1.0
    return config
