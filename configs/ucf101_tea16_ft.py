"""Fine-tunes a Kinetics TEA-16 on UCF101 split 1 (paper Table 5).

Learning rate 0.001 for a batch of 64, divided by 10 at epochs 10 and 20, 25 epochs, weight decay
5e-4 (paper appendix; the released ``opts.py`` default), dropout 0.8 and partial BatchNorm (every
BatchNorm but the first keeps its statistics and affine parameters frozen). ``init_from`` is the
exported model of a Kinetics run (``runs/kinetics_tea16/model``) or a converted released
checkpoint (``python -m tea_jax.convert tea ...``); its classifier is replaced. The data are the
frame folders and lists of docs/data.md's ``prepare lists`` and ``prepare frames`` commands
(``data/ucf101/frames/{train,test}_split1.txt``).
"""

from configs import default as default_lib


def get_config():
    config = default_lib.get_config()
    config.num_segments = 16
    config.init_from = "runs/kinetics_tea16/model"
    config.model_options.dropout_rate = 0.8
    config.model_options.partial_bn = True

    config.data.source = "frames"
    config.data.root = "data/ucf101/frames"
    config.data.train_list = "train_split1.txt"
    config.data.val_list = "test_split1.txt"
    config.data.num_classes = 101

    config.num_epochs = 25
    config.optim.lr = 0.001
    config.optim.weight_decay = 5e-4
    config.optim.lr_steps = (10, 20)
    config.log_every_steps = 20
    config.checkpoint_every_steps = 0
    return config
