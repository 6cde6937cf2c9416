"""Evaluates a trained model with the paper's test protocols.

  python eval.py --config configs/synthetic_tea8.py --workdir runs/synthetic_tea8
  python eval.py --config configs/kinetics_tea16.py --workdir runs/k400 --protocols accuracy
  python eval.py --config configs/ucf101_tea16_ft.py --checkpoint converted/ --workdir out/

Without ``--checkpoint`` the best (else the latest) training checkpoint of ``--workdir`` is
evaluated. Writes ``eval_<protocol>.json``, ``confusion_<protocol>.png`` and
``predictions_<protocol>.jsonl`` into ``--workdir`` and prints a table.
"""

import jax
from absl import flags
from ml_collections import config_flags

from tea_jax import cli
from tea_jax.train import distributed, evaluation

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file of the run.", lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir; the reports are written here.")
flags.DEFINE_string(
    "checkpoint", None, "Model checkpoint directory (save_model/convert output) to evaluate."
)
flags.DEFINE_list(
    "protocols",
    ["efficient", "accuracy"],
    "efficient (1 clip x centre crop), accuracy (10 clips x 3 crops), config "
    "(data.test_clips x data.test_crops).",
)
flags.DEFINE_enum("split", "val", ["val", "test"], "Split to evaluate.")
flags.DEFINE_string("labels", None, "Class names, one per line, for the reports.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    distributed.start(argv)
    summaries = evaluation.run_evaluation(
        FLAGS.config,
        FLAGS.workdir,
        protocols=FLAGS.protocols,
        split=FLAGS.split,
        checkpoint=FLAGS.checkpoint,
        class_names=evaluation.read_class_names(FLAGS.labels),
    )
    if jax.process_index() == 0:
        print(f"Checkpoint: {summaries[0]['checkpoint']} ({FLAGS.split} split)")
        print(evaluation.format_table(summaries))


if __name__ == "__main__":
    cli.run_absl(main)
