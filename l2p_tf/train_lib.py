"""The continual loop: task after task, train -> evaluate every seen task -> record -> checkpoint.

`run` owns the checkpoint manager, the summary writers, the results files and the task index. Training within a
task is orbit's (`orbit.Controller` + `L2PTrainer`): it restores the newest checkpoint on start (on a fresh start
`run` reads the pretrained `.npz` instead, before any data work), saves every `checkpoint_every_steps` steps and at each task's end, and writes
train summaries. One checkpoint holds the model, the optimizer, the global step, the number of finished tasks, the
accuracy matrix so far and the accumulated wall time; the position in the data stream is derived from the global
step (task t starts at the sum of the earlier tasks' step counts, and its input pipeline can start at any step), so
a rerun of the same command resumes where the last checkpoint left off, mid-task included, and ends with the same
results.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import shutil
import signal
import sys
import threading
import time
from typing import Callable, Optional, Sequence

from absl import logging
import gin
import numpy as np
import orbit
import tensorflow as tf
import tf_keras

from l2p_tf import checkpoint_recovery
from l2p_tf import cl_metrics
from l2p_tf import continual
from l2p_tf import evaluator as evaluator_lib
from l2p_tf import faults
from l2p_tf import gin_utils
from l2p_tf import input_pipeline
from l2p_tf import model_dir as model_dir_lib
from l2p_tf import optimizers
from l2p_tf import precision as precision_lib
from l2p_tf import results as results_lib
from l2p_tf import trainer as trainer_lib
from l2p_tf.checkpoints import npz_loader


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one worker that writes results, summaries and the real checkpoints."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not getattr(resolver, 'task_type', None):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == 'chief':
    return True
  has_chief = 'chief' in resolver.cluster_spec().as_dict()
  return task_type == 'worker' and task_id == 0 and not has_chief


def strategy_name(strategy: tf.distribute.Strategy) -> str:
  """The public name of a strategy (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
  name = type(strategy).__name__
  return 'MultiWorkerMirroredStrategy' if name == 'CollectiveAllReduceStrategy' else name


def _say(msg: str) -> None:
  print(msg, flush=True)


# orbit's Controller both logs and prints a multi-line dict after every loop. Stdout belongs to the progress lines a
# person reads, so its messages go to the log only (absl INFO); everything it says is still there.
orbit.controller._log = logging.info  # pylint: disable=protected-access

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure; rerunning the same command resumes.


class PreemptedError(RuntimeError):
  """Training stopped on request (SIGTERM / SIGINT) after writing a checkpoint; rerun the same command to resume."""


class NonFiniteLossError(RuntimeError):
  """A train step produced a NaN / Inf loss or gradient; the run stopped and kept its last good checkpoint."""


class Preemption:
  """Turns SIGTERM / SIGINT into a request to stop after the current train step.

  The loop then saves a checkpoint and the results files and raises `PreemptedError`. A second signal while
  stopping is ignored, so the checkpoint write is not cut short by an impatient repeat. `uninstall` restores the
  handlers that were there before `install`.
  """

  def __init__(self):
    self.requested: Optional[str] = None
    self._previous = {}

  def install(self) -> 'Preemption':
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def uninstall(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.requested is None:
      self.requested = signal.Signals(signum).name
      print(f'\n{self.requested} received: finishing the current step, then writing a checkpoint...', flush=True)

  def should_stop(self, step: int) -> bool:  # pylint: disable=unused-argument
    """Whether to stop before the step after global step `step` (checked between every two steps)."""
    return self.requested is not None


class CheckpointManager(tf.train.CheckpointManager):
  """`tf.train.CheckpointManager` that never rewrites a checkpoint in place, and falls back on a damaged newest one.

  * Checkpoints are numbered by the save counter (`ckpt-1`, `ckpt-2`, ...; the global step is inside), whatever
    number the caller passes. A run saves twice at the same step (a task's last step, then again after its
    evaluation with the new accuracy row), and rewriting `ckpt-<step>` in place would leave, for a moment, the
    newest registered checkpoint with a new data file and the old index: a SIGKILL then would leave no loadable
    checkpoint. A new name is written completely before the `checkpoint` state file points to it.
  * `save(force=True)` saves even when a checkpoint of this step exists, and the new one supersedes a checkpoint this
    process saved at the same step (the task-end one, once the post-evaluation one is complete): it stops counting
    towards `max_to_keep` at once, and its files are deleted after the new checkpoint is named in the state file.
  * `restore_or_initialize` restores the newest checkpoint that loads, newest first, saying which it skipped.
  * The fault-injection point `checkpoint_write` sits between a checkpoint's files and the state file.
  """

  def save(self, checkpoint_number=None, check_interval=True, options=None,  # pylint: disable=unused-argument
           force=False):
    superseded = None
    if force:
      if self._last_checkpoint_step is not None and self._last_checkpoint_step == int(self._step_counter.numpy()):
        superseded = self.latest_checkpoint
        self._maybe_delete.pop(superseded, None)  # Still named in the state file until the new one is written.
      self._last_checkpoint_step = None
    options = copy.copy(options) if options is not None else tf.train.CheckpointOptions()
    options.experimental_write_callbacks = [lambda *_: faults.point('checkpoint_write')] + list(
        options.experimental_write_callbacks or [])
    path = super().save(checkpoint_number=None, check_interval=check_interval, options=options)
    if superseded and path and path != superseded:
      for f in tf.io.gfile.glob(f'{superseded}.*'):
        tf.io.gfile.remove(f)
    return path

  restored_path = None  # The checkpoint `restore_or_initialize` actually restored (None: a fresh start).

  def restore_or_initialize(self):
    self.restored_path, _ = checkpoint_recovery.restore_newest_readable(self._checkpoint.restore, self.checkpoints,
                                                                       self.directory, say=_say)
    return self.restored_path


@dataclasses.dataclass
class _State:
  """Variables that go into the checkpoint besides model and optimizer."""
  global_step: tf.Variable
  task_index: tf.Variable
  tasks_done: tf.Variable
  accuracy_matrix: tf.Variable
  wall_time: tf.Variable


class ProgressAction:
  """Prints a progress line after each train loop: task, step/total, loss, accuracy, images/s, ETA."""

  def __init__(self, *, global_step: tf.Variable, total_tasks: int, log_every_steps: int):
    self.total_tasks = total_tasks
    self.log_every_steps = max(1, log_every_steps)
    self.task = 0
    self.task_name = ''
    self.start_step = self.end_step = 0
    self._t0 = time.perf_counter()
    self._s0 = 0
    self._last_logged = -1
    self.global_step = global_step

  def begin_task(self, task: int, name: str, start_step: int, end_step: int, current_step: int):
    self.task, self.task_name = task, name
    self.start_step, self.end_step = start_step, end_step
    self._t0, self._s0 = time.perf_counter(), current_step
    self._last_logged = current_step

  def __call__(self, output):
    step = int(self.global_step.numpy())
    done = step >= self.end_step
    if not done and step - self._last_logged < self.log_every_steps:
      return
    self._last_logged = step
    total = self.end_step - self.start_step
    rate = (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
    eta = datetime.timedelta(seconds=round((self.end_step - step) / rate)) if rate > 0 else '?'
    _say(f'[task {self.task + 1}/{self.total_tasks} {self.task_name}] step {step - self.start_step}/{total} '
         f'({100.0 * (step - self.start_step) / max(total, 1):.0f}%)  loss {float(output["loss"]):.4f}  '
         f'train_acc {float(output["train_accuracy"]):.2f}%  {float(output["images_per_second"]):.0f} img/s  '
         f'ETA {eta}')


def _metric_curves(acc: np.ndarray, scenario: str) -> dict:
  if scenario == 'task_agnostic':
    done = [float(r[0]) for r in acc if not np.isnan(r[0])]
    return {'avg_acc': done, 'forgetting': [None] * len(done), 'backward': [None] * len(done),
            'learning_acc': [None] * len(done)}
  if scenario == 'joint':
    return cl_metrics.joint_curves(acc)
  return cl_metrics.metric_curves(acc)


def run(*, model_dir: str, strategy: tf.distribute.Strategy, benchmark: Callable, vit: Callable, model: Callable,
        optimizer: Callable = optimizers.build_optimizer, prompt_pool: Optional[Callable] = None,
        mode: str = 'train', data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
        init_checkpoint: str = '', global_batch_size: int = 128, eval_batch_size: Optional[int] = None,
        pull_coefficient: float = 1.0, grad_clip_norm: Optional[float] = 1.0, reset_optimizer_per_task: bool = True,
        use_label_mask: bool = True, seed: int = 42, steps_per_loop: int = 20, log_every_steps: int = 50,
        checkpoint_every_steps: int = 500, max_checkpoints_to_keep: int = 2,
        eval_selections: Sequence[str] = ('batchwise',), jit_compile=False,
        deterministic_ops: bool = False, preemption: Optional[Preemption] = None, overwrite: bool = False,
        precision: str = 'auto', eval_with_changed_config: bool = False) -> dict:
  """Trains and evaluates one continual-learning run in `model_dir` (or resumes it); returns the results dict.

  Args:
    model_dir: where checkpoints, summaries, `config.gin` and the results files go.
    strategy: a `tf.distribute` strategy (everything that creates variables is built under its scope).
    benchmark: `benchmark(data_dir=..., manual_dir=...)` -> a `continual.ContinualBenchmark`.
    vit: `vit()` -> a `VisionTransformer` (the backbone).
    model: `model(vit=..., prompt_pool=..., num_classes=...)` -> an `L2PModel`.
    optimizer: `optimizer(global_batch_size=...)` -> a tf_keras optimizer.
    prompt_pool: `prompt_pool(embed_dim=..., num_tasks=...)` -> a `PromptPool`; None for a model without prompts.
    mode: 'train' (train, or resume, then evaluate) or 'eval' (re-evaluate the newest checkpoint).
    data_dir, manual_dir: tfds data and manual-download directories (from the command-line flags).
    init_checkpoint: path of an original ViT `.npz` read on a fresh start; '' means a random backbone.
    global_batch_size: examples per training step over all replicas; must be divisible by the replica count.
    eval_batch_size: examples per evaluation step over all replicas (default: `global_batch_size`).
    pull_coefficient: weight of the key-query pull constraint.
    grad_clip_norm: global-norm gradient clipping; None or 0 disables it.
    reset_optimizer_per_task: zero the optimizer's step and moments at the start of each task.
    use_label_mask: class-incremental logit mask in training.
    seed: seeds initialisation and the data order/augmentation.
    steps_per_loop: steps between progress checks and train summaries (checkpoint cadence is a multiple of it).
    log_every_steps: progress-line cadence.
    checkpoint_every_steps: checkpoint cadence within a task (a checkpoint is also written at every task's end).
    max_checkpoints_to_keep: newest checkpoints kept.
    eval_selections: prompt-selection modes evaluated; the first fills the accuracy matrix.
    jit_compile: XLA-compile the per-replica train step: True, False or 'auto' (on GPU only).
    deterministic_ops: enable TensorFlow's op determinism (bit-exact reruns on GPU; CPU is deterministic anyway).
    preemption: stop request source (main installs SIGTERM / SIGINT handlers); None never stops early.
    overwrite: start afresh even if `model_dir` holds a run (of any config); the old run is moved to
      `<model_dir>.overwritten-<time>/` first. Without it, a run of a different config is refused.
    precision: 'float32', 'mixed_bfloat16' (bfloat16 matmuls; prompts, keys, head, softmax and loss in float32;
      see l2p_tf/precision.py) or 'auto' (mixed_bfloat16 on TPU / GPU, float32 on CPU).
    eval_with_changed_config: mode 'eval' only: evaluate although this config differs from the run's config.gin
      (the differences are printed); without it such an evaluation is refused.

  Returns:
    The results dict written to `model_dir/results.json`.

  Raises:
    ValueError: bad input: inconsistent settings (batch not divisible by replicas, image sizes that disagree, unknown
      mode), a model_dir that is locked, unwritable or holds another config, a task without examples, labels
      outside the head. Raised before anything in `model_dir` is written.
    RuntimeError: data that cannot be prepared or read; a NaN / Inf loss (`NonFiniteLossError`).
    PreemptedError: `preemption` asked to stop; a checkpoint and the results so far were written first.
  """
  wall_start = time.time()
  gin_utils.check_argument_types(run, locals())
  if mode not in ('train', 'eval'):
    raise ValueError(f"Unknown mode {mode!r}; use 'train' or 'eval'.")
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise ValueError(f'global_batch_size={global_batch_size} is not divisible by the {replicas} replicas of '
                     f'{strategy_name(strategy)}; use a multiple of {replicas}.')
  eval_batch_size = eval_batch_size or global_batch_size
  if eval_batch_size % replicas:
    raise ValueError(f'eval_batch_size={eval_batch_size} is not divisible by the {replicas} replicas; use a multiple '
                     f'of {replicas}.')
  chief = is_chief(strategy)
  if deterministic_ops:
    tf.config.experimental.enable_op_determinism()
  tf_keras.utils.set_random_seed(seed)

  bench = benchmark(data_dir=data_dir, manual_dir=manual_dir)  # Reads no data yet.
  num_tasks = len(bench.tasks)
  num_eval = len(bench.eval_names)
  for task in bench.tasks:
    out_of_range = [c for c in task.classes if not 0 <= c < bench.num_classes]
    if out_of_range:
      raise ValueError(f'Task {task.index} ({task.name}) trains classes {out_of_range[:5]} outside the head\'s range '
                       f'0..{bench.num_classes - 1} ({bench.num_classes} classes of {bench.name}); fix the '
                       'benchmark\'s num_classes or its class ids.')

  # The dtype policy is read by each layer when it is built, so it only needs to cover the construction.
  with strategy.scope(), precision_lib.policy_scope(precision, strategy) as policy_name:
    backbone = vit()
    if getattr(bench, 'image_size', backbone.image_size) != backbone.image_size:
      raise ValueError(f'The benchmark makes {bench.image_size}px images but the ViT expects '
                       f'{backbone.image_size}px; bind both to the same IMAGE_SIZE.')
    pool = prompt_pool(embed_dim=backbone.hidden_size, num_tasks=num_tasks) if prompt_pool else None
    net = model(vit=backbone, prompt_pool=pool, num_classes=bench.num_classes)
    opt = optimizer(global_batch_size=global_batch_size)
    opt.build(net.trainable_variables)
    state = _State(
        global_step=orbit.utils.create_global_step(),
        task_index=tf.Variable(0, dtype=tf.int32, trainable=False, name='task_index',
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA),
        tasks_done=tf.Variable(0, dtype=tf.int64, trainable=False, name='tasks_done',
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA),
        accuracy_matrix=tf.Variable(np.full((num_tasks, num_eval), np.nan, np.float32), trainable=False,
                                    name='accuracy_matrix', aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA),
        wall_time=tf.Variable(0.0, dtype=tf.float64, trainable=False, name='wall_time',
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA))
  # Every configurable has been called by now: the operative config is complete.
  operative = gin.operative_config_str() if gin.config_str() else ''
  config_hash = gin_utils.config_hash() if gin.config_str() else ''

  # The model_dir: locked (chief), checked against the config, tidied; from here on, errors release the lock and leave
  # what was there as it was (a model_dir this run created is removed again if it is still empty).
  lock = model_dir_lib.ModelDirLock(model_dir, read_only_ok=mode == 'eval') if chief else None
  if lock is not None:
    lock.acquire()
  try:
    return _run_locked(model_dir=model_dir, strategy=strategy, mode=mode, data_dir=data_dir, manual_dir=manual_dir,
                       init_checkpoint=init_checkpoint, global_batch_size=global_batch_size,
                       eval_batch_size=eval_batch_size, pull_coefficient=pull_coefficient,
                       grad_clip_norm=grad_clip_norm, reset_optimizer_per_task=reset_optimizer_per_task,
                       use_label_mask=use_label_mask, seed=seed, steps_per_loop=steps_per_loop,
                       log_every_steps=log_every_steps, checkpoint_every_steps=checkpoint_every_steps,
                       max_checkpoints_to_keep=max_checkpoints_to_keep, eval_selections=eval_selections,
                       jit_compile=jit_compile, preemption=preemption, overwrite=overwrite, wall_start=wall_start,
                       replicas=replicas, chief=chief, bench=bench, num_tasks=num_tasks, num_eval=num_eval,
                       backbone=backbone, pool=pool, net=net, opt=opt, state=state, operative=operative,
                       config_hash=config_hash, lock=lock, policy_name=policy_name,
                       eval_with_changed_config=eval_with_changed_config)
  finally:
    if lock is not None:
      lock.release_and_tidy()


def _run_locked(*, model_dir, strategy, mode, data_dir, manual_dir, init_checkpoint, global_batch_size,
                eval_batch_size, pull_coefficient, grad_clip_norm, reset_optimizer_per_task, use_label_mask, seed,
                steps_per_loop, log_every_steps, checkpoint_every_steps, max_checkpoints_to_keep, eval_selections,
                jit_compile, preemption, overwrite, wall_start, replicas, chief, bench, num_tasks, num_eval, backbone,
                pool, net, opt, state, operative, config_hash, lock, policy_name, eval_with_changed_config) -> dict:
  """`run` after the model is built and the model_dir locked (the arguments are `run`'s locals)."""
  ckpt_dir = os.path.join(model_dir, 'checkpoints')
  if chief and mode == 'train':
    if overwrite:
      moved = model_dir_lib.move_aside(model_dir)
      if moved:
        _say(f'--overwrite: moved the previous contents of {model_dir} to {moved}; starting afresh.')
    else:
      model_dir_lib.check_same_config(model_dir, operative)
    model_dir_lib.remove_partial_files(model_dir, ckpt_dir)
  read_only = lock is not None and lock.read_only
  if mode == 'eval':
    model_dir_lib.check_eval_config(model_dir, operative, allow=eval_with_changed_config)
    model_dir_lib.recover_checkpoint_state(ckpt_dir, write=chief and not read_only, say=_say)

  # Not dataclasses.asdict: it deep-copies, and the checkpoint would hold copies of the variables.
  ckpt = tf.train.Checkpoint(model=net, optimizer=opt,
                             **{f.name: getattr(state, f.name) for f in dataclasses.fields(state)})
  if not chief:  # Non-chief workers take part in the collective save but write to a scratch directory.
    ckpt_dir = os.path.join(model_dir, f'.worker_{strategy.cluster_resolver.task_id}', 'checkpoints')

  manager = CheckpointManager(
      ckpt, ckpt_dir, max_to_keep=max_checkpoints_to_keep, step_counter=state.global_step,
      checkpoint_interval=checkpoint_every_steps)
  if mode == 'eval' and manager.latest_checkpoint is None:
    raise ValueError(f'--mode=eval needs a checkpoint, and {ckpt_dir} has none. Train first (--mode=train).')
  if manager.latest_checkpoint is None:
    # Fresh start: the pretrained backbone is read now (never on a resume, where the checkpoint has it), before any
    # data work, so a wrong path or a mismatched file fails in seconds.
    if init_checkpoint:
      report = npz_loader.load_vit_npz(backbone, init_checkpoint)
      _say(f'Backbone: loaded {len(report.loaded)} arrays from {init_checkpoint} ({report.seconds:.1f}s).')
    else:
      _say('Backbone: RANDOM weights (INIT_CHECKPOINT is empty). Accuracy will be far below the paper\'s, which '
           'needs a pretrained ViT; set INIT_CHECKPOINT to an original .npz.')

  # Counting the examples prepares the data (a download, or reading --tfds_manual_dir): only after the model is
  # built and the backbone read, so a configuration mistake fails in seconds, before any data work.
  task_steps = [bench.steps_per_task(t, global_batch_size) for t in range(num_tasks)]
  task_starts = np.concatenate([[0], np.cumsum(task_steps)]).astype(int).tolist()
  _check_data(bench, task_steps, global_batch_size)

  trainer = trainer_lib.L2PTrainer(
      strategy=strategy, model=net, optimizer=opt, global_step=state.global_step, task_index=state.task_index,
      global_batch_size=global_batch_size, pull_coefficient=pull_coefficient, grad_clip_norm=grad_clip_norm,
      use_label_mask=use_label_mask, jit_compile=jit_compile)
  progress = ProgressAction(global_step=state.global_step, total_tasks=num_tasks, log_every_steps=log_every_steps)
  preemption = preemption or Preemption()
  trainer.stop_requested = preemption.should_stop

  summary_root = model_dir if chief else os.path.join(model_dir, f'.worker_{strategy.cluster_resolver.task_id}')
  controller = orbit.Controller(
      global_step=state.global_step, trainer=trainer, strategy=strategy, steps_per_loop=steps_per_loop,
      checkpoint_manager=manager, summary_dir=os.path.join(summary_root, 'train'), train_actions=[progress])
  evaluator = evaluator_lib.Evaluator(strategy=strategy, model=net, selections=eval_selections,
                                      pool_size=pool.pool_size if pool is not None else 0)
  eval_writer = tf.summary.create_file_writer(os.path.join(summary_root, 'eval')) if chief and not read_only else (
      tf.summary.create_noop_writer())
  restored_from = manager.restored_path  # Not latest_checkpoint: after a fallback, the one actually used.
  step0 = int(state.global_step.numpy())

  if chief and not read_only:
    tf.io.gfile.makedirs(model_dir)
    config_path = os.path.join(model_dir, model_dir_lib.CONFIG_NAME)
    if operative and mode == 'train' and not tf.io.gfile.exists(config_path):
      # Written once per run: a resume keeps the stored config (which it was checked against) as the reference.
      results_lib.atomic_write(config_path, operative)
      with eval_writer.as_default():
        tf.summary.text('gin/operative_config', '```\n' + operative + '\n```', step=step0)
    try:  # For l2p_tf.export: class names without reaching for the data again.
      results_lib.atomic_write(os.path.join(model_dir, 'class_names.txt'),
                               ''.join(f'{c}\n' for c in bench.class_names))
    except Exception as e:  # pylint: disable=broad-except  (names are a convenience; training goes on)
      logging.warning('Could not write class_names.txt: %s', e)
  if lock is not None:
    lock.created_dir = False  # The run has written its files: the directory stays whatever happens next.

  _say(f'l2p-tf | {bench.name} ({bench.scenario}), {num_tasks} tasks, {bench.num_classes} classes | '
       f'{strategy_name(strategy)} x{replicas} | global batch {global_batch_size} | {policy_name} | '
       f'model_dir {model_dir}')
  if hasattr(net, 'summary_line'):
    _say(net.summary_line())
  if restored_from:
    _say(f'Resuming from {restored_from} (step {step0}, {int(state.tasks_done.numpy())} tasks finished).')

  eval_datasets = {}

  def eval_dataset(i):
    if i not in eval_datasets:
      eval_datasets[i] = strategy.distribute_datasets_from_function(
          lambda ctx: bench.eval_dataset(i, ctx, global_batch_size=eval_batch_size))
    return eval_datasets[i]

  names = [t.name for t in bench.tasks] if bench.scenario != 'joint' else list(bench.eval_names)
  extra_matrices = {s: np.full((num_tasks, num_eval), np.nan) for s in evaluator.selections[1:]}
  eval_histograms = {}

  def evaluate_after(t: int) -> np.ndarray:
    row = np.full(num_eval, np.nan)
    for i in bench.eval_ids_after(t):
      faults.point('evaluation')
      start = time.perf_counter()
      res = evaluator.evaluate(eval_dataset(i))
      primary = res[evaluator.selections[0]]
      row[i] = primary['accuracy']
      eval_histograms[bench.eval_names[i]] = primary['prompt_histogram'].tolist()
      for s in evaluator.selections[1:]:
        extra_matrices[s][t, i] = res[s]['accuracy']
      logging.info('eval after task %d on %s: %.2f%% of %d (%.1fs)', t, bench.eval_names[i], primary['accuracy'],
                   primary['count'], time.perf_counter() - start)
    return row

  def read_usage():
    # An ON_READ (SUM) variable: reading it is a collective all-reduce under MultiWorkerMirrored, so every worker
    # reads it at the same points (never inside a chief-only branch).
    return pool.usage.numpy() if pool is not None else None

  def build_results(acc: np.ndarray, done: int, usage) -> dict:
    rows = acc[:done]
    curves = _metric_curves(rows, bench.scenario)
    out = {
        'benchmark': bench.name, 'scenario': bench.scenario, 'num_tasks': num_tasks, 'tasks_done': done,
        'complete': done == num_tasks, 'eval_names': list(bench.eval_names),
        'tasks': [{'name': task.name, 'classes': [int(c) for c in task.classes],
                   'train_examples': int(bench.num_train_examples(k)), 'steps': int(task_steps[k])}
                  for k, task in enumerate(bench.tasks)],
        'accuracy_matrix': results_lib.matrix_to_lists(rows),
        **curves,
        'final': {k: (v[-1] if v else None) for k, v in curves.items()},
    }
    for s, m in extra_matrices.items():
      out[f'accuracy_matrix_{s}'] = results_lib.matrix_to_lists(m[:done])
    if pool is not None:
      out['prompt_usage_train'] = usage[:done].astype(int).tolist()
      out['prompt_histogram_eval'] = eval_histograms
    out.update({'global_step': int(state.global_step.numpy()), 'global_batch_size': global_batch_size,
                'strategy': strategy_name(strategy), 'num_replicas': replicas, 'seed': seed, 'precision': policy_name,
                'gin_config_hash': config_hash, 'train_step_traces_this_process': trainer.trace_count,
                'wall_time_seconds': round(float(state.wall_time.numpy()) + time.time() - wall_start, 1)})
    return out

  def record(t: int, acc: np.ndarray, done: int) -> dict:
    usage_all = read_usage()
    res = build_results(acc, done, usage_all)
    if not chief:
      return res
    png = results_lib.write_all(model_dir, res, acc[:done], names)
    step = int(state.global_step.numpy())
    with eval_writer.as_default():
      for i in bench.eval_ids_after(t):
        tf.summary.scalar(f'accuracy_{i}', acc[t, i], step=step)
      for k in ('avg_acc', 'forgetting', 'backward', 'learning_acc'):
        if res[k] and res[k][-1] is not None:
          tf.summary.scalar(k, res[k][-1], step=step)
      for s, m in extra_matrices.items():
        tf.summary.scalar(f'avg_acc_{s}', float(np.nanmean(m[t])), step=step)
      if pool is not None:
        usage = usage_all[t]
        ids = np.repeat(np.arange(len(usage)), usage.astype(np.int64))
        tf.summary.histogram(f'prompt_usage/task_{t}', ids.astype(np.float32), step=step,
                             buckets=len(usage))
      tf.summary.image('accuracy_matrix', tf.image.decode_png(png)[None], step=step)
    eval_writer.flush()
    return res

  acc = state.accuracy_matrix.numpy().astype(np.float64)
  done = int(state.tasks_done.numpy())

  if mode == 'eval':
    # The newest task trained: the one in progress if training has moved past its start, else the last finished.
    in_progress = done < num_tasks and int(state.global_step.numpy()) > task_starts[done]
    t = done if in_progress else done - 1
    if t < 0:
      raise ValueError('The checkpoint has not trained any task yet; nothing to evaluate.')
    state.task_index.assign(t)
    row = evaluate_after(t)
    acc_eval = acc.copy()
    acc_eval[t] = row
    res = build_results(acc_eval, t + 1, read_usage())
    if chief and not read_only:
      results_lib.atomic_write(os.path.join(model_dir, 'eval_results.json'), json.dumps(res, indent=2) + '\n')
    _say(cl_metrics.format_matrix(acc_eval[:t + 1], names) if bench.scenario != 'task_agnostic' else
         f'accuracy on {bench.eval_names[0]}: {row[0]:.2f}%')
    return res

  res = build_results(acc, done, read_usage())
  if done and chief:
    # The results files match the checkpoint (a kill can come between a checkpoint and the results written after it).
    results_lib.write_all(model_dir, res, acc[:done], names)
  def stop(t: int, start: int, end: int):
    """Checkpoint and results so far, then `PreemptedError` (every worker calls it at the same step)."""
    step = int(state.global_step.numpy())
    state.wall_time.assign(float(state.wall_time.numpy()) + time.time() - wall_start)
    manager.save(check_interval=False)  # A no-op when this step's checkpoint exists.
    partial = build_results(acc, t, read_usage())
    if chief:
      results_lib.write_all(model_dir, partial, acc[:t], names)
    raise PreemptedError(f'Preempted ({preemption.requested or "stop requested"}) at step {step}, task {t + 1}/'
                         f'{num_tasks} ({step - start}/{end - start} steps); checkpoint written to {ckpt_dir}. '
                         'Rerun the same command to resume.')

  for t in range(done, num_tasks):
    start, end = task_starts[t], task_starts[t + 1]
    state.task_index.assign(t)
    gs = int(state.global_step.numpy())
    if trainer.should_stop(gs):  # A signal that came during data preparation or evaluation.
      stop(t, start, end)
    if gs < end:
      if gs == start and reset_optimizer_per_task:
        optimizers.reset_optimizer(opt)
      _say(f'== Task {t + 1}/{num_tasks} ({bench.tasks[t].name}): {len(bench.tasks[t].classes)} classes, '
           f'{bench.num_train_examples(t)} examples, steps {gs - start}/{end - start} done')
      trainer.train_dataset = strategy.distribute_datasets_from_function(
          lambda ctx, t=t, skip=gs - start: bench.train_dataset(t, ctx, global_batch_size=global_batch_size,
                                                                 seed=seed, start_step=skip))
      progress.begin_task(t, bench.tasks[t].name, start, end, gs)
      try:
        controller.train(steps=end)  # Saves a checkpoint at the task's end.
      except trainer_lib.StopRequested:  # Stopped on request between two steps.
        stop(t, start, end)
      except trainer_lib.NonFiniteError as e:
        raise NonFiniteLossError(
            f'NaN or Inf loss/gradient in train step {e.step + 1} (task {t + 1}/{num_tasks} {bench.tasks[t].name}, '
            f'step {e.step - start + 1}/{end - start} of the task); its gradient was discarded and nothing was saved '
            f'after it: the newest checkpoint, {manager.latest_checkpoint or "none yet"}, is the last good state. '
            'Lower the learning rate or check the data; rerunning the same command resumes from that checkpoint '
            '(a changed config needs --overwrite, which moves this run aside).') from None
      except tf.errors.DataLossError as e:
        raise RuntimeError(f'Corrupt data while training task {t + 1} ({bench.tasks[t].name}): '
                           f'{input_pipeline.op_error_text(e)}. Delete the prepared dataset under --tfds_data_dir '
                           f'({data_dir or input_pipeline.default_data_dir()}) and rerun to prepare it again.'
                          ) from None
      finally:
        # Free the task's iterator here, by reference count. The trainer sits in reference cycles (its
        # tf.functions hold its bound methods), so an iterator left on it is freed later by Python's cycle
        # collector, which can free a multi-device iterator's parts in an order where tf.data's destructor waits
        # forever for its own prefetch thread (seen as a rare hang under MirroredStrategy).
        trainer.train_dataset = None
    row = evaluate_after(t)
    acc[t] = row
    state.accuracy_matrix.assign(acc.astype(np.float32))
    acc = state.accuracy_matrix.numpy().astype(np.float64)  # What a resumed run reads back, exactly.
    state.tasks_done.assign(t + 1)
    state.wall_time.assign(float(state.wall_time.numpy()) + time.time() - wall_start)
    wall_start = time.time()
    manager.save(check_interval=False, force=True)  # Same step as the task-end checkpoint, new name.
    res = record(t, acc, t + 1)
    if bench.scenario == 'task_agnostic':
      _say(f'after segment {t + 1}: accuracy on {bench.eval_names[0]} {acc[t, 0]:.2f}%')
    elif bench.scenario == 'joint':
      _say('joint training, accuracy per task: ' + ', '.join(
          f'{n} {a:.2f}' for n, a in zip(bench.eval_names, acc[t])) + f'; avg_acc {res["final"]["avg_acc"]:.2f}')
    else:
      _say(cl_metrics.format_matrix(acc[:t + 1], names))
      f = res['final']
      _say(f'after task {t + 1}: avg_acc {f["avg_acc"]:.2f}  forgetting '
           f'{"-" if f["forgetting"] is None else format(f["forgetting"], ".2f")}')
    faults.point('task_end')
  if not chief:
    shutil.rmtree(os.path.join(model_dir, f'.worker_{strategy.cluster_resolver.task_id}'), ignore_errors=True)
  f = res['final']
  if res['complete']:
    _say(f'Done: final avg_acc {f["avg_acc"]:.2f}, forgetting '
         f'{"-" if f["forgetting"] is None else format(f["forgetting"], ".2f")} -> {model_dir}/results.json')
  sys.stdout.flush()
  return res


def _check_data(bench, task_steps: Sequence[int], global_batch_size: int) -> None:
  """Build-time checks of the prepared data: every task and evaluation set has examples, labels fit the head.

  Raises:
    ValueError: naming the task and what to change.
  """
  for t, n in enumerate(task_steps):
    examples = bench.num_train_examples(t)
    if examples == 0:
      raise ValueError(f'Task {t} ({bench.tasks[t].name}) has no training examples: none of its classes '
                       f'{_short(bench.tasks[t].classes)} is in the training data. Check the benchmark\'s classes '
                       '(class_order, num_tasks, datasets) and that the data set is complete.')
    if n <= 0:
      raise ValueError(f'Task {t} ({bench.tasks[t].name}) has {examples} training examples, fewer than one global '
                       f'batch of {global_batch_size}: it would train for 0 steps. Lower global_batch_size or check '
                       'the task definition.')
  for i, name in enumerate(bench.eval_names):
    if bench.num_eval_examples(i) == 0:
      raise ValueError(f'Evaluation set {i} ({name}) has no examples: none of its classes is in the test data. '
                       'Check the benchmark\'s classes and that the data set is complete.')
  # Labels the data actually holds (in-memory sources; streamed ones are checked by the loss on CPU / NaN check).
  parts = []
  if isinstance(bench, continual.SegmentedBenchmark):
    parts += [(f'task {t} ({task.name}) training data', bench.train_part(t)) for t, task in enumerate(bench.tasks)]
  elif isinstance(bench, continual.GaussianBenchmark):
    parts.append(('the training pool', bench.train_part()))
  for i, name in enumerate(bench.eval_names):
    parts.append((f'evaluation set {i} ({name})', bench._eval_part(i)))  # pylint: disable=protected-access
  for what, part in parts:
    if isinstance(part, input_pipeline.ArrayPart) and len(part.indices):
      labels = np.asarray(part.labels)[part.indices]
      low, high = int(labels.min()), int(labels.max())
      if low < 0 or high >= bench.num_classes:
        raise ValueError(f'The labels of {what} range over {low}..{high}, outside the head\'s {bench.num_classes} '
                         f'classes (0..{bench.num_classes - 1}) of {bench.name}: fix the benchmark\'s num_classes or '
                         'its label offsets.')


def _short(classes: Sequence[int], n: int = 8) -> str:
  classes = list(classes)
  return str(classes) if len(classes) <= n else f'[{", ".join(map(str, classes[:n]))}, ... ({len(classes)} classes)]'
