"""One training step of any method, as an `orbit.StandardTrainer`.

A step: the method's work on frozen weights (`Method.frozen_features`, outside the gradient tape), its loss (inside
the tape, which watches the method's trainable variables, plus the frozen parameters when the clip's scope is 'all'),
gradients summed over replicas, a non-finite guard, global-norm clipping over the configured scope
(`clipping.GlobalNormClip`: 'trainable', or 'all' as the official code, whose frozen-backbone gradients enter the
norm only), apply. The step knows nothing of tasks beyond the `task_index` variable it
hands to the method and the label mask that arrives with the data, so it is traced once for the whole run.

Steps run in device loops of `steps_per_loop` steps: 1 (the CPU default) is one `tf.function` call per step from a
Python loop; n > 1 is one call of a `tf.while_loop` over up to n steps, so the host dispatches (and waits for) once
per n steps. The main thread returns to Python after every device loop: a SIGTERM handler runs then, and a stop
request or a non-finite loss / gradient is acted on before the next loop (`StopRequested`, `NonFiniteError`); a
device loop ends early at its first non-finite step. The steps are the same ops in the same order whatever n, so
results are bit-identical to n = 1 (tests/train_loop_test.py). orbit's loop of `Cadence.steps_per_loop` steps (train
summaries, checkpoints, a task's end) is cut into device loops, the last one clipped, so they never cross it.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Union

import orbit
import tensorflow as tf
import tf_keras

from l2p_tf.engine import clipping
from l2p_tf.engine import precision as precision_lib
from l2p_tf.engine import strategies
from l2p_tf.methods import base as method_base


class StopRequested(Exception):
  """Raised between two steps when `Trainer.stop_requested(step)` is true (on any worker)."""


class NonFiniteError(Exception):
  """Raised after a step whose loss or gradient norm was NaN or Inf; its gradient was zeroed (no NaN in the weights).

  Attributes:
    step: the global step count before the failing step (the failing step is step `step + 1`).
  """

  def __init__(self, step: int):
    super().__init__(f'non-finite loss or gradient in train step {step + 1}')
    self.step = step


class Trainer(orbit.StandardTrainer):
  """Runs training steps of a `Method` under a `tf.distribute` strategy.

  Args:
    strategy: the strategy the method's model and the optimizer were built under.
    method: a built `methods.base.Method`.
    optimizer: a tf_keras optimizer, already built for `method.trainable_variables`.
    global_step: int64 variable incremented once per step (orbit's step counter).
    task_index: int32 variable holding the current task (handed to `method.loss`).
    global_batch_size: examples per step over all replicas.
    grad_clip_norm: clip the global gradient norm to this value; None or 0 disables clipping.
    grad_clip_scope: whose gradients the clipping norm covers: 'trainable' or 'all' (the frozen parameters' too,
      official); see `clipping.GlobalNormClip`.
    jit_compile: compile the per-replica step with XLA: True, False or 'auto' (True on GPU and for float32 on CPU;
      see `precision.resolve_jit_compile`).
    stop_requested: called with the global step before each device loop; True stops (agreed across workers).
    steps_per_loop: steps per device loop (see the module docstring): a positive int or 'auto' (1 on CPU, 20 or
      `accelerator_steps` on GPU / TPU; see `precision.resolve_steps_per_loop`).
    accelerator_steps: what 'auto' means on GPU / TPU (the run passes its orbit loop, `Cadence.steps_per_loop`).
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, method: method_base.Method, optimizer,
               global_step: tf.Variable, task_index: tf.Variable, global_batch_size: int,
               grad_clip_norm: Optional[float] = 1.0, grad_clip_scope: str = 'trainable', jit_compile=False,
               stop_requested: Optional[Callable[[int], bool]] = None, steps_per_loop: Union[int, str] = 1,
               accelerator_steps: int = 20):
    self.strategy, self.method, self.optimizer = strategy, method, optimizer
    self.global_step, self.task_index, self.global_batch_size = global_step, task_index, global_batch_size
    self.clip = clipping.GlobalNormClip(max_norm=grad_clip_norm, scope=grad_clip_scope,
                                        frozen_variables=clipping.frozen_parameters(method.model))
    self.stop_requested = stop_requested
    self.trace_count = 0  # Python side effect: counts traces of the step function (should stay 1).
    with strategy.scope():
      self.loss_metric = tf_keras.metrics.Mean('loss', dtype=tf.float32)
      self.scalar_metrics = {n: tf_keras.metrics.Mean(n, dtype=tf.float32) for n in method.scalar_names}
      self.accuracy_metric = tf_keras.metrics.SparseCategoricalAccuracy('train_accuracy', dtype=tf.float32)
      self.grad_norm_metric = tf_keras.metrics.Mean('grad_norm', dtype=tf.float32)
    policy = getattr(getattr(method, 'model', None), 'dtype_policy', None)
    self.jit_compile = precision_lib.resolve_jit_compile(jit_compile, strategy, getattr(policy, 'name', None))
    self._replica_step = tf.function(self._replica_step_impl, jit_compile=True) if self.jit_compile else (
        self._replica_step_impl)
    self.steps_per_loop = precision_lib.resolve_steps_per_loop(steps_per_loop, strategy, accelerator_steps)
    self._any_worker = strategies.AnyWorker(strategy)
    self._loop_start = None
    self._loop_steps = 0
    super().__init__(train_dataset=None, options=orbit.StandardTrainerOptions(use_tf_while_loop=False))

  @property
  def metrics(self):
    return [self.loss_metric, *self.scalar_metrics.values(), self.accuracy_metric, self.grad_norm_metric]

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
    variables = self.method.trainable_variables
    # Work on frozen weights (L2P's query pass) runs before the tape opens, so the tape records only what trains.
    # The tape watches only what the clip scope needs (`self.clip.sources`): Keras's `trainable = False` leaves a
    # frozen backbone's tf.Variables trainable, and a default tape would record their reads and build weight
    # gradients. With scope 'all' the method keeps outside the tape only what needs no gradient.
    frozen = self.method.frozen_features(batch['image'], backbone_gradients=self.clip.needs_frozen_gradients)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(self.clip.sources(variables))
      out = self.method.loss(batch, frozen=frozen, task_index=self.task_index,
                             global_batch_size=self.global_batch_size, num_replicas=ctx.num_replicas_in_sync)
    # Summed over replicas before the norm (as jax.lax.pmean in the original), scaled by the clip factor over the
    # configured scope.
    grads, grad_norm = self.clip(tape, out.loss, variables, replica_context=ctx)
    # A NaN / Inf anywhere (loss on any replica, or the global gradient) zeroes the gradient, so no NaN reaches the
    # weights (Adam's momentum still moves them a little); the Python loop then raises NonFiniteError before anything
    # is saved, so that state is never kept. (No tf.cond skipping apply_gradients: its merge_call is not allowed in a
    # cond branch under MirroredStrategy.)
    bad_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~tf.math.is_finite(out.loss), tf.float32))
    finite = tf.logical_and(tf.math.is_finite(grad_norm), tf.equal(bad_loss, 0.0))
    grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
    self.optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)
    self.accuracy_metric.update_state(batch['label'], out.logits)
    # Scale back to per-example means so the logged loss does not depend on the replica count.
    self.loss_metric.update_state(out.loss * ctx.num_replicas_in_sync)
    for name, metric in self.scalar_metrics.items():
      metric.update_state(out.scalars[name])
    self.grad_norm_metric.update_state(grad_norm)
    return finite

  def train_step(self, iterator):
    """One step; returns whether its loss and gradients were finite (the update was applied)."""
    self.trace_count += 1
    finite = self.strategy.run(self._replica_step, args=(next(iterator),))
    self.global_step.assign_add(1)
    return self.strategy.experimental_local_results(finite)[0]  # The same on every replica (all-reduced inputs).

  # -- The device loops (see the module docstring). -------------------------------------------------------------------
  def create_train_loop_fn(self):
    n = self.steps_per_loop
    # One traced while-loop serves every loop length (the length is a tensor): a clipped loop at a task's end is not
    # traced again, and n = 1 runs the very graph n > 1 runs (a separate one-step function is optimised differently
    # by grappler, which moves results in the last bits).
    step_fn = tf.function(self._device_loop)

    def loop_fn(iterator, num_steps):
      remaining = int(num_steps)
      while remaining > 0:
        steps = min(n, remaining)
        self.run_step(step_fn, iterator, steps)
        remaining -= steps

    return loop_fn

  def _device_loop(self, iterator, num_steps):
    """Up to `num_steps` train steps in one `tf.while_loop`; stops after the first non-finite one.

    Returns:
      (steps run, whether every one was finite).
    """
    def body(i, finite):
      del finite
      return i + 1, self.train_step(iterator)

    return tf.while_loop(lambda i, finite: tf.logical_and(i < num_steps, finite), body,
                         (tf.constant(0, tf.int32), tf.constant(True)), parallel_iterations=1)

  def run_step(self, step_fn, iterator, num_steps: int = 1) -> None:
    """Checks for a stop request, runs one compiled step (or device loop of `num_steps` steps), and raises on a
    non-finite loss or gradient."""
    step = int(self.global_step.numpy())
    if self.should_stop(step):
      raise StopRequested()
    done, finite = step_fn(iterator, tf.constant(num_steps, tf.int32))
    if not bool(finite):
      raise NonFiniteError(step + int(done) - 1)

  def should_stop(self, step: int) -> bool:
    """`stop_requested(step)`, agreed by all workers (any one asking stops all: the next save is collective)."""
    if self.stop_requested is None:
      return False
    return self._any_worker(bool(self.stop_requested(step)))


def current_learning_rate(optimizer) -> tf.Tensor:
  """The optimizer's learning rate now (evaluating a schedule at its own step counter)."""
  lr = optimizer.learning_rate
  if isinstance(lr, tf_keras.optimizers.schedules.LearningRateSchedule):
    return tf.cast(lr(optimizer.iterations), tf.float32)
  return tf.cast(tf.convert_to_tensor(lr), tf.float32)
