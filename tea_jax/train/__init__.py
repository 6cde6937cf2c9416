"""Training library: sharded steps, optimizer recipe, checkpoints, evaluation and logging.

The entry points are ``train.py`` (:func:`tea_jax.train.trainer.train_and_evaluate`) and
``eval.py`` (:func:`tea_jax.train.evaluation.run_evaluation`).
"""
