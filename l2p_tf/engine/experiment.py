"""The build recipe: gin -> benchmark, backbone, method, optimizer and run state. Every tool builds through it
(training, pretraining, export, the benchmarks), so a run is rebuilt exactly as it was trained.

    spec  = Experiment(benchmark=..., backbone=..., method=..., optimizer=..., init_checkpoint=..., seed=...)
    built = build(spec, training, strategy=..., data_dir=..., manual_dir=...)          # model, no data read
    built.prepare_data()                                     # counts (prepares) the data; per-task step counts
    built.build_optimizer()                                  # optimizer + run state, under the strategy's scope

The model is built first, then the data is prepared, so a configuration mistake fails in seconds, before any data
work; the optimizer comes last because a schedule may depend on the run's length.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import gin
import numpy as np
import tensorflow as tf
import tf_keras

from l2p_tf import gin_utils
from l2p_tf import optimizers
from l2p_tf.engine import checkpointing
from l2p_tf.engine import config
from l2p_tf.engine import precision as precision_lib
from l2p_tf.engine import strategies


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a run is made of (gin binds each part; see gin_configs/base.gin).

  Attributes:
    benchmark: `benchmark(data_dir=..., manual_dir=...)` -> a `data.benchmark.ContinualBenchmark`.
    backbone: `backbone(**kwargs)` -> a `models.vit.VisionTransformer` (the method decides the kwargs).
    method: `method()` -> a `methods.base.Method`.
    optimizer: `optimizer(global_batch_size=..., task_steps=...)` -> a tf_keras optimizer.
    init_checkpoint: an original ViT `.npz` read into the backbone on a fresh start; '' = random weights.
    seed: seeds initialisation and the data order / augmentation.
  """
  benchmark: Optional[Callable] = None
  backbone: Optional[Callable] = None
  method: Optional[Callable] = None
  optimizer: Callable = optimizers.build_optimizer
  init_checkpoint: str = ''
  seed: int = 42

  def __post_init__(self):
    config.check_types(self)


@dataclasses.dataclass
class Built:
  """A built experiment. `task_steps` / `task_starts`, `optimizer` and `state` exist after the later stages."""
  spec: Experiment
  training: config.Training
  strategy: tf.distribute.Strategy
  benchmark: object
  method: object
  policy_name: str
  task_steps: Optional[list] = None
  task_starts: Optional[list] = None
  optimizer: Optional[tf_keras.optimizers.Optimizer] = None
  state: Optional[checkpointing.RunState] = None

  @property
  def num_tasks(self) -> int:
    return len(self.benchmark.tasks)

  def prepare_data(self) -> list[int]:
    """Prepares the data (a download, or reading --tfds_manual_dir), checks it, returns the per-task step counts."""
    self.task_steps = list(self.benchmark.check_data(self.training.global_batch_size))
    self.task_starts = np.concatenate([[0], np.cumsum(self.task_steps)]).astype(int).tolist()
    return self.task_steps

  def build_optimizer(self) -> tf_keras.optimizers.Optimizer:
    """The optimizer (built for the method's trainable variables) and the run state, under the strategy's scope."""
    with self.strategy.scope():
      self.optimizer = self.spec.optimizer(global_batch_size=self.training.global_batch_size,
                                           task_steps=tuple(self.task_steps or ()))
      self.optimizer.build(self.method.trainable_variables)
      self.state = checkpointing.RunState.create(self.num_tasks, len(self.benchmark.eval_names))
    return self.optimizer


def check_batch(what: str, value: int, strategy: tf.distribute.Strategy, method=None) -> None:
  """Raises ValueError unless `value` examples split evenly over the strategy's replicas (and, given a built
  method, unless the replica batch suits it: L2P's vote groups)."""
  replicas = strategy.num_replicas_in_sync
  if value % replicas:
    raise ValueError(f'{what}={value} is not divisible by the {replicas} replicas of '
                     f'{strategies.strategy_name(strategy)}; use a multiple of {replicas}.')
  if method is not None:
    method.check_batch_size(value // replicas, f'{what}={value} over {replicas} replica(s)')


def build(spec: Experiment, training: config.Training, *, strategy: tf.distribute.Strategy,
          data_dir: Optional[str] = None, manual_dir: Optional[str] = None) -> Built:
  """Builds the benchmark (no data read) and the method's model under the strategy's scope and dtype policy.

  Raises:
    ValueError: a part left unbound, a batch not divisible by the replicas, classes outside the head, image sizes
      that disagree.
  """
  for part in ('benchmark', 'backbone', 'method'):
    if getattr(spec, part) is None:
      raise ValueError(f'No {part} is bound: set experiment.Experiment.{part} in a gin file (base.gin includes '
                       'the run settings; a data/*.gin, models/*.gin and methods/*.gin file give the parts).')
  check_batch('global_batch_size', training.global_batch_size, strategy)
  if training.deterministic_ops:
    tf.config.experimental.enable_op_determinism()
  tf_keras.utils.set_random_seed(spec.seed)
  bench = spec.benchmark(data_dir=data_dir, manual_dir=manual_dir)  # Reads no data yet.
  bench.check_classes()
  # The dtype policy is read by each layer when it is built, so it only needs to cover the construction.
  with strategy.scope(), precision_lib.policy_scope(training.precision, strategy) as policy_name:
    method = spec.method()
    method.build(backbone=spec.backbone, num_classes=bench.num_classes, num_tasks=len(bench.tasks))
  check_batch('global_batch_size', training.global_batch_size, strategy, method)
  image_size = getattr(method.backbone, 'image_size', None)
  bench_size = getattr(getattr(bench, 'preprocess', None), 'image_size', image_size)
  if image_size is not None and bench_size != image_size:
    raise ValueError(f'The benchmark makes {bench_size}px images but the ViT expects {image_size}px; bind both to '
                     'the same IMAGE_SIZE.')
  return Built(spec=spec, training=training, strategy=strategy, benchmark=bench, method=method,
               policy_name=policy_name)


def operative_config() -> tuple[str, str]:
  """(operative gin config, its hash) once every configurable has been called; ('', '') without gin."""
  if not gin.config_str():
    return '', ''
  return gin.operative_config_str(), gin_utils.config_hash()
