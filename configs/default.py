"""Defaults of every training/evaluation option; the other configs override them.

Use as ``python train.py --config configs/default.py --workdir DIR [--config.key=value ...]``.
The recipe is the paper's Kinetics one (appendix B): SGD with momentum 0.9, learning rate 0.01
for a batch of 64 scaled linearly with the global batch, coupled weight decay 1e-4, gradient
norm clipped at 20, dropout 0.5, 50 epochs with the rate divided by 10 at epochs 30, 40 and 45.
"""

import os

import ml_collections

from tea_jax import data


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Model: `tea_jax.create_model(model, num_classes=<from data>, num_segments, **model_options)`.
    config.model = "tea50"
    config.num_segments = 8
    # `stage_sizes` and `width_multiplier` (None: the model's) give reduced networks.
    config.model_options = ml_collections.ConfigDict(
        {
            "dropout_rate": 0.5,
            "partial_bn": False,
            "stage_sizes": ml_collections.FieldReference(None, field_type=tuple),
            "width_multiplier": ml_collections.FieldReference(None, field_type=float),
        }
    )
    # Clips that share BatchNorm statistics in training: each group of `bn_group_clips` clips (all
    # their frames) is normalised with its own, as each GPU of the released DataParallel training
    # normalised its 8 clips; the same on any number of devices. The running statistics follow
    # the mean over the groups (DataParallel kept GPU 0's). 0: the whole global batch. The batch
    # per host must be a multiple of it.
    config.bn_group_clips = 8
    # Compute dtype: 'auto' is bfloat16 on GPU/TPU and float32 on CPU; parameters stay float32.
    config.compute_dtype = "auto"
    # Rematerialisation to fit larger batches: '' (none), 'dots' (keep convolution outputs,
    # recompute normalisations/activations), 'full' (recompute the whole forward pass) or 'blocks'
    # (keep each bottleneck's input, recompute one block at a time: the one that lowers the peak).
    config.remat = ""
    # A model checkpoint (e.g. a converted ImageNet Res2Net-50) whose backbone initialises the
    # model; '' trains from scratch.
    config.init_from = ""
    # Whether the classifier starts afresh (normal(0, 0.001), zero bias; lr x5 weight, x10 bias:
    # optim.classifier_*_lr_mult) or is loaded from `init_from` with the backbone (lr x1 / x2):
    # 'true', 'false', or 'auto': afresh unless `init_from` is a video model with the same class
    # count (an ImageNet classifier, one frame per clip, is always replaced, as the released TSN
    # does; the released main.py keeps a --tune_from classifier only when the dataset's name is in
    # its path).
    config.new_classifier = "auto"

    # Data: every option of `tea_jax.data.default_config()`.
    config.data = data.default_config()

    # Run length and cadence. `total_steps` > 0 overrides `num_epochs`; 0 for the `*_every_steps`
    # options means once per epoch.
    config.batch_size = 64  # Global over all hosts and devices.
    config.eval_batch_size = 64  # Global, in videos (each with all its views).
    config.num_epochs = 50
    config.total_steps = 0
    config.log_every_steps = 50
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.keep_best_checkpoints = 1
    config.seed = 0
    # 'START,END': a jax.profiler trace of training steps START to END (1-based, inclusive) in
    # WORKDIR/profile (TensorBoard and Perfetto), on process 0; '' for none.
    config.profile_steps = ""
    # JAX's persistent compilation cache: a local folder or a URL shared by the hosts; a restarted
    # run loads its compiled steps from it instead of compiling them again. '' turns it off.
    config.compilation_cache_dir = os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "tea_jax", "jax_cache"
    )

    # Evaluation during training: 'efficient', 'accuracy' or '' (data.test_clips x
    # data.test_crops); eval.py takes --protocols instead.
    config.eval_protocol = "efficient"
    # How the views of a video are combined: 'logits' (the released code) or 'softmax'.
    config.score_average = "logits"

    config.label_smoothing = 0.0
    config.optim = ml_collections.ConfigDict(
        {
            "name": "sgd",  # or 'adamw'.
            "lr": 0.01,
            "lr_batch_size": 64,  # `lr` is for this global batch and scales linearly.
            "momentum": 0.9,
            "nesterov": False,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 1e-4,
            "schedule": "step",  # step | cosine | constant.
            "lr_steps": (30, 40, 45),  # Epochs where the step schedule multiplies by lr_decay.
            "lr_decay": 0.1,
            "warmup_epochs": 0.0,
            "clip_norm": 20.0,  # Global gradient norm; 0 disables clipping.
            # Group multipliers: biases lr x2 without decay; BatchNorm lr x1, decay x bn_decay_mult;
            # a new classifier: weight lr x5, bias lr x10 (no decay).
            "bias_lr_mult": 2.0,
            "bn_decay_mult": 0.0,
            "classifier_lr_mult": 5.0,
            "classifier_bias_lr_mult": 10.0,
        }
    )
    return config
