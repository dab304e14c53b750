"""A trained method outside a training run: rebuilt by the same recipe, weights restored, evaluated or exported.

Used by `l2p_tf.export` (SavedModel) and `l2p_tf.pretrain` (the `.npz` export and its round-trip check).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from l2p_tf.engine import config
from l2p_tf.engine import evaluator as evaluator_lib
from l2p_tf.engine import experiment as experiment_lib


class RestoreError(ValueError):
  """A checkpoint does not fit the model the recipe rebuilt."""


def build(spec: experiment_lib.Experiment, *, strategy: Optional[tf.distribute.Strategy] = None,
          data_dir: Optional[str] = None, manual_dir: Optional[str] = None) -> experiment_lib.Built:
  """The experiment's method in float32 under `strategy` (default: the default strategy); no data read, no optimizer."""
  strategy = strategy or tf.distribute.get_strategy()
  training = config.Training(global_batch_size=strategy.num_replicas_in_sync, precision='float32')
  return experiment_lib.build(spec, training, strategy=strategy, data_dir=data_dir, manual_dir=manual_dir)


def restore(built: experiment_lib.Built, path: str) -> str:
  """Restores the method's model (only: no optimizer slots, step or accuracy matrix) from checkpoint `path`.

  Raises:
    RestoreError: a variable of the model is not in the checkpoint, or has another shape.
  """
  status = tf.train.Checkpoint(model=built.method.model).restore(path)
  try:
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise RestoreError(f'The checkpoint {path} does not fit the model the config builds: {e}') from e
  status.expect_partial()
  return path


def evaluate_set(built: experiment_lib.Built, i: int, *, batch_size: int, selection: str = 'batchwise') -> float:
  """Top-1 accuracy (percent) of the built method on the benchmark's evaluation set i."""
  strategy = built.strategy
  experiment_lib.check_batch('batch_size', batch_size, strategy)
  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: built.benchmark.eval_dataset(i, ctx, global_batch_size=batch_size))
  evaluator = evaluator_lib.Evaluator(strategy=strategy, method=built.method, selections=(selection,))
  return evaluator.evaluate(dataset)[selection]['accuracy']
