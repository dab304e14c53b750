"""One L2P training step, as an `orbit.StandardTrainer`.

A step: the model's frozen query pass (`L2PModel.query_pass`, outside the gradient tape) and its prompted pass
(`L2PModel.call`, inside the tape), cross-entropy on the logits with each example's `label_mask` (classes outside
the current task at -inf), minus `pull_coefficient * reduce_sim`; gradients summed over replicas, clipped by the global
norm over `grad_clip_scope` (`clipping.GlobalNormClip`: 'trainable' = prompts, keys and head, the only gradients the
tape then computes; 'all' = those and the frozen backbone's, computed for the norm only, as the official code), and
the trainable variables' applied.

The step knows nothing of tasks beyond the `task_index` variable (read by the prompt pool's task-wise mask) and the
label mask that arrives with the data, so it is traced once for the whole run.

Steps run one `tf.function` call at a time from a Python loop (not a `tf.while_loop` of `steps_per_loop` steps), so
the main thread returns to Python after every step: a SIGTERM handler runs then, and a stop request or a non-finite
loss / gradient is acted on before the next step (`StopRequested`, `NonFiniteError`).
"""

from __future__ import annotations

import time
from typing import Optional

import orbit
import tensorflow as tf
import tf_keras

from l2p_tf import clipping
from l2p_tf import faults
from l2p_tf import losses
from l2p_tf import precision as precision_lib


class StopRequested(Exception):
  """Raised between two steps when `L2PTrainer.stop_requested()` is true (on any worker)."""


class NonFiniteError(Exception):
  """Raised after a step whose loss or gradient norm was NaN or Inf; its gradient was zeroed (no NaN in the weights).

  Attributes:
    step: the global step count before the failing step (the failing step is step `step + 1`).
  """

  def __init__(self, step: int):
    super().__init__(f'non-finite loss or gradient in train step {step + 1}')
    self.step = step


class L2PTrainer(orbit.StandardTrainer):
  """Runs training steps of an `L2PModel` under a `tf.distribute` strategy.

  Args:
    strategy: the strategy the model and optimizer were built under.
    model: an `L2PModel` (or any model with the same call contract).
    optimizer: a tf_keras optimizer, already built for `model.trainable_variables`.
    global_step: int64 variable incremented once per step (orbit's step counter).
    task_index: int32 variable holding the current task (for the prompt pool's task-wise mask).
    global_batch_size: examples per step over all replicas (the loss is summed and divided by it).
    pull_coefficient: weight of the key-query pull constraint (`reduce_sim`).
    grad_clip_norm: clip the global gradient norm to this value; None or 0 disables clipping.
    grad_clip_scope: whose gradients the clipping norm covers: 'trainable' or 'all' (the frozen backbone's too,
      official); see `clipping.GlobalNormClip`.
    use_label_mask: apply the data's `label_mask` to the logits (class-incremental training).
    jit_compile: compile the per-replica step with XLA: True, False or 'auto' (True on GPU; see
      `precision.resolve_jit_compile`).
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model: tf_keras.Model, optimizer,
               global_step: tf.Variable, task_index: tf.Variable, global_batch_size: int,
               pull_coefficient: float = 1.0, grad_clip_norm: Optional[float] = 1.0, use_label_mask: bool = True,
               jit_compile=False, grad_clip_scope: str = 'trainable'):
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.global_step = global_step
    self.task_index = task_index
    self.global_batch_size = global_batch_size
    self.pull_coefficient = pull_coefficient
    self.grad_clip_norm = grad_clip_norm
    self.clip = clipping.GlobalNormClip(max_norm=grad_clip_norm, scope=grad_clip_scope,
                                        frozen_variables=clipping.frozen_parameters(model))
    self.use_label_mask = use_label_mask
    # Models with a prompt pool and a `query_pass` method (L2PModel) get their query computed outside the tape.
    self._separate_query_pass = (getattr(model, 'prompt_pool', None) is not None
                                 and callable(getattr(model, 'query_pass', None)))
    self.trace_count = 0  # Python side effect: counts traces of the step function (should stay 1).
    with strategy.scope():
      self.loss_metric = tf_keras.metrics.Mean('loss', dtype=tf.float32)
      self.ce_metric = tf_keras.metrics.Mean('cross_entropy', dtype=tf.float32)
      self.accuracy_metric = tf_keras.metrics.SparseCategoricalAccuracy('train_accuracy', dtype=tf.float32)
      self.reduce_sim_metric = tf_keras.metrics.Mean('reduce_sim', dtype=tf.float32)
      self.grad_norm_metric = tf_keras.metrics.Mean('grad_norm', dtype=tf.float32)
    self.jit_compile = precision_lib.resolve_jit_compile(jit_compile, strategy)
    self._replica_step = tf.function(self._replica_step_impl, jit_compile=True) if self.jit_compile else (
        self._replica_step_impl)
    self._loop_start = None
    self._loop_steps = 0
    super().__init__(train_dataset=None, options=orbit.StandardTrainerOptions(use_tf_while_loop=False))

  @property
  def metrics(self):
    return [self.loss_metric, self.ce_metric, self.accuracy_metric, self.reduce_sim_metric, self.grad_norm_metric]

  def train(self, num_steps):
    self._loop_steps = int(num_steps)
    return super().train(num_steps)

  def train_loop_begin(self):
    for m in self.metrics:
      m.reset_state()
    self._loop_start = time.perf_counter()

  def train_loop_end(self):
    out = {m.name: m.result() for m in self.metrics}
    out['train_accuracy'] = out['train_accuracy'] * 100.0
    elapsed = time.perf_counter() - self._loop_start
    out['images_per_second'] = self._loop_steps * self.global_batch_size / max(elapsed, 1e-9)
    out['learning_rate'] = current_learning_rate(self.optimizer)
    return out

  def _replica_step_impl(self, batch):
    ctx = tf.distribute.get_replica_context()
    variables = self.model.trainable_variables
    # The frozen query pass runs before the tape opens, so the tape records only the prompted pass. The tape
    # watches only what the clip scope needs (`self.clip.sources`): Keras's `trainable = False` leaves the
    # backbone's tf.Variables trainable, and a default tape would record their reads and build weight gradients.
    query_pass = self.model.query_pass(batch['image']) if self._separate_query_pass else None
    if query_pass is not None and self.clip.needs_frozen_gradients:
      query_pass = {'query': query_pass['query']}  # Embed again inside the tape: the embedding's gradients count.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(self.clip.sources(variables))
      out = self.model(batch['image'], task_index=self.task_index, training=True, **(
          {'query_pass': query_pass} if query_pass is not None else {}))
      logits = out['logits']
      mask = batch['label_mask'] if self.use_label_mask else None
      ce = losses.cross_entropy(logits, batch['label'], mask)
      ce_loss = tf.reduce_sum(ce) / self.global_batch_size
      pull = losses.pull_loss(out['reduce_sim'], self.pull_coefficient) / ctx.num_replicas_in_sync
      loss = ce_loss + pull
    # Summed over replicas before the norm (as jax.lax.pmean in the original), clipped over the configured scope.
    grads, grad_norm = self.clip(tape, loss, variables, replica_context=ctx)
    # A NaN / Inf anywhere (loss on any replica, or the global gradient) zeroes the gradient, so no NaN reaches the
    # weights (Adam's momentum still moves them a little); the Python loop then raises NonFiniteError before anything
    # is saved, so that state is never kept. (No tf.cond skipping apply_gradients: its merge_call is not allowed in a
    # cond branch under MirroredStrategy.)
    bad_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~tf.math.is_finite(loss), tf.float32))
    finite = tf.logical_and(tf.math.is_finite(grad_norm), tf.equal(bad_loss, 0.0))
    grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
    self.optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)
    masked_logits = losses.mask_logits(logits, mask) if mask is not None else logits
    self.accuracy_metric.update_state(batch['label'], masked_logits)
    # Scale back to per-example means so the logged loss does not depend on the replica count.
    self.loss_metric.update_state(loss * ctx.num_replicas_in_sync)
    self.ce_metric.update_state(ce_loss * ctx.num_replicas_in_sync)
    self.reduce_sim_metric.update_state(out['reduce_sim'])
    self.grad_norm_metric.update_state(grad_norm)
    return finite

  def train_step(self, iterator):
    """One step; returns whether its loss and gradients were finite (the update was applied)."""
    self.trace_count += 1
    finite = self.strategy.run(self._replica_step, args=(next(iterator),))
    self.global_step.assign_add(1)
    return self.strategy.experimental_local_results(finite)[0]  # The same on every replica (all-reduced inputs).

  # -- The per-step loop (see the module docstring). ------------------------------------------------------------------
  stop_requested = None  # Optional[Callable[[int], bool]]: called with the global step before each step.

  def create_train_loop_fn(self):
    step_fn = tf.function(self.train_step)

    def loop_fn(iterator, num_steps):
      for _ in range(int(num_steps)):
        faults.point('train_step')
        step = int(self.global_step.numpy())
        if self.should_stop(step):
          raise StopRequested()
        if not bool(step_fn(iterator)):
          raise NonFiniteError(step)

    return loop_fn

  def should_stop(self, step: int) -> bool:
    """`stop_requested(step)`, agreed by all workers (any one asking stops all: the next save is collective)."""
    if self.stop_requested is None:
      return False
    stop = bool(self.stop_requested(step))
    if _num_hosts(self.strategy) > 1:
      if self._any_worker is None:
        self._any_worker = tf.function(self._any_replica)
      stop = bool(self._any_worker(tf.constant(float(stop))))
    return stop

  _any_worker = None

  def _any_replica(self, flag):
    def replica_fn(x):
      # tf.identity places the flag on this replica's device (MultiWorkerMirrored refuses an unplaced input).
      return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(x))
    return self.strategy.experimental_local_results(self.strategy.run(replica_fn, args=(flag,)))[0] > 0


def _num_hosts(strategy: tf.distribute.Strategy) -> int:
  """Workers (MultiWorkerMirrored) or hosts (TPU pod) that run this program side by side."""
  extended = strategy.extended
  return int(getattr(extended, '_num_workers', 0) or getattr(extended, 'num_hosts', 1) or 1)


def current_learning_rate(optimizer) -> tf.Tensor:
  """The optimizer's learning rate now (evaluating a schedule at its own step counter)."""
  lr = optimizer.learning_rate
  if isinstance(lr, tf_keras.optimizers.schedules.LearningRateSchedule):
    return tf.cast(lr(optimizer.iterations), tf.float32)
  return tf.cast(tf.convert_to_tensor(lr), tf.float32)
