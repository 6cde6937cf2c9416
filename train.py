"""Trains a model.

  python train.py --config configs/synthetic_tea8.py --workdir runs/synthetic_tea8

Any config value can be overridden on the command line (``--config.batch_size=32``). Running the
same command again resumes from the latest checkpoint in ``--workdir``. On several hosts, start
the same command on every host; ``jax.distributed.initialize()`` finds the others on TPU pods and
SLURM clusters, or from ``--coordinator_address``, ``--num_processes`` and ``--process_id``.
"""

import jax
from absl import flags
from ml_collections import config_flags

from tea_jax import cli
from tea_jax.train import distributed, trainer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the exported model.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    distributed.start(argv)
    results = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if results and jax.process_index() == 0:
        print(
            f"Final validation top-1 {100 * results['top1']:.2f}%, "
            f"top-5 {100 * results['top5']:.2f}%"
            f" ({results['num_videos']} videos). Outputs in {FLAGS.workdir}."
        )


if __name__ == "__main__":
    cli.run_absl(main)
