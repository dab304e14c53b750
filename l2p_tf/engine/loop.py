"""The continual loop: task after task, train -> evaluate every seen task -> record -> checkpoint.

`run` builds the experiment (engine/experiment.py), claims the model_dir (engine/run_dir.py) and hands over to
`ContinualRun`, whose steps are plain methods: `train_task`, `finish_task` (evaluate, checkpoint, record) and `stop`.
Training within a task is orbit's (`orbit.Controller` + `Trainer`): it restores the newest checkpoint on start,
saves every `checkpoint_every_steps` steps and at each task's end, and writes train summaries. A rerun of the same
command resumes where the last checkpoint left off, mid-task included, and ends with the same results.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Optional

from absl import logging
import numpy as np
import orbit
import tensorflow as tf

from l2p_tf import optimizers
from l2p_tf.engine import checkpointing
from l2p_tf.engine import config
from l2p_tf.engine import evaluator as evaluator_lib
from l2p_tf.engine import experiment as experiment_lib
from l2p_tf.engine import preemption as preemption_lib
from l2p_tf.engine import reporting
from l2p_tf.engine import run_dir
from l2p_tf.engine import strategies
from l2p_tf.engine import trainer as trainer_lib

say = reporting.say

# orbit's Controller prints a multi-line dict after every loop; stdout is for progress lines, so it goes to the log.
orbit.controller._log = logging.info  # pylint: disable=protected-access


def run(*, model_dir: str, strategy: tf.distribute.Strategy, experiment: experiment_lib.Experiment,
        training: config.Training = config.Training(), evaluation: config.Evaluation = config.Evaluation(),
        cadence: config.Cadence = config.Cadence(), mode: str = 'train', data_dir: Optional[str] = None,
        manual_dir: Optional[str] = None, preemption: Optional[preemption_lib.Preemption] = None,
        overwrite: bool = False, eval_with_changed_config: bool = False) -> dict:
  """Trains and evaluates one continual-learning run in `model_dir` (or resumes it); returns the results dict.

  Args:
    model_dir: where checkpoints, summaries, `config.gin` and the results files go.
    strategy: a `tf.distribute` strategy (everything that creates variables is built under its scope).
    experiment: benchmark, backbone, method, optimizer, init checkpoint and seed (gin: `experiment.Experiment`).
    training, evaluation, cadence: run settings (engine/config.py).
    mode: 'train' (train, or resume, then evaluate) or 'eval' (re-evaluate the newest checkpoint).
    data_dir, manual_dir: tfds data and manual-download directories (from the command-line flags).
    preemption: stop request source (main installs SIGTERM / SIGINT handlers); None never stops early.
    overwrite: start afresh even if `model_dir` holds a run (of any config); the old run is moved to
      `<model_dir>.overwritten-<time>/` first. Without it, a run of a different config is refused.
    eval_with_changed_config: mode 'eval' only: evaluate although this config differs from the run's config.gin
      (the differences are printed); without it such an evaluation is refused.

  Returns:
    The results dict written to `model_dir/results.json` (`eval_results.json` in 'eval' mode).

  Raises:
    ValueError: bad input (inconsistent settings, a model_dir that is locked, unwritable or holds another config,
      a task without examples, labels outside the head), raised before anything in `model_dir` is written.
    RuntimeError: data that cannot be prepared or read; a NaN / Inf loss (`NonFiniteLossError`).
    PreemptedError: `preemption` asked to stop; a checkpoint and the results so far were written first.
  """
  wall_start = time.time()
  if mode not in ('train', 'eval'):
    raise ValueError(f"Unknown mode {mode!r}; use 'train' or 'eval'.")
  built = experiment_lib.build(experiment, training, strategy=strategy, data_dir=data_dir, manual_dir=manual_dir)
  experiment_lib.check_batch('eval_batch_size', evaluation.batch_size or training.global_batch_size, strategy,
                             built.method)
  if mode == 'train' and (overwrite or not checkpointing.has_checkpoint(model_dir)):
    # Fresh start: the pretrained backbone is read now (never on a resume, where the checkpoint has it), before any
    # data work, so a wrong path or a mismatched file fails in seconds.
    checkpointing.initialize_backbone(built.method.backbone, experiment.init_checkpoint, say)
  built.prepare_data()
  built.build_optimizer()
  operative, config_hash = experiment_lib.operative_config()  # Every configurable has been called by now.
  chief = strategies.is_chief(strategy)
  with run_dir.claim(model_dir, operative=operative, chief=chief, mode=mode, overwrite=overwrite,
                     eval_with_changed_config=eval_with_changed_config, say=say) as lock:
    writes = chief and not (lock is not None and lock.read_only)  # A read-only run is evaluated, never written.
    loop = ContinualRun(model_dir=model_dir, built=built, evaluation=evaluation, cadence=cadence, chief=chief,
                        writes=writes, preemption=preemption, wall_start=wall_start, config_hash=config_hash)
    if mode == 'eval' and loop.manager.latest_checkpoint is None:
      raise ValueError(f'--mode=eval needs a checkpoint, and {loop.manager.directory} has none. Train first '
                       '(--mode=train).')
    loop.start(operative, mode)
    if lock is not None:
      lock.created_dir = False  # The run has written its files: the directory stays whatever happens next.
    return loop.evaluate_only() if mode == 'eval' else loop.train()


class ContinualRun:
  """One run's loop over its tasks (see the module docstring); built by `run` inside the claimed model_dir."""

  def __init__(self, *, model_dir: str, built: experiment_lib.Built, evaluation: config.Evaluation,
               cadence: config.Cadence, chief: bool, writes: bool,
               preemption: Optional[preemption_lib.Preemption], wall_start: float, config_hash: str):
    self.model_dir, self.built, self.chief, self.wall_start = model_dir, built, chief, wall_start
    self.bench, self.method, self.state, strategy = built.benchmark, built.method, built.state, built.strategy
    self.strategy, self.training = strategy, built.training
    self.eval_batch_size = evaluation.batch_size or built.training.global_batch_size
    # The official evaluation drops each set's last partial batch of the training batch size (off by default).
    self.eval_drop_remainder_of = built.training.global_batch_size if evaluation.drop_remainder else None
    self.scratch = None if chief else strategies.worker_scratch_dir(strategy, model_dir)
    with strategy.scope():  # Every protocol's rows live in the checkpoint, as the primary accuracy matrix does.
      self.state.add_protocol_matrices((len(evaluation.protocols), len(reporting.MATRICES), built.num_tasks,
                                        len(self.bench.eval_names)))
    self.manager = checkpointing.make_manager(
        directory=checkpointing.checkpoint_dir(model_dir, self.scratch), model=self.method.model,
        optimizer=built.optimizer, state=self.state, max_to_keep=cadence.max_checkpoints_to_keep,
        every_steps=cadence.checkpoint_every_steps, say=say)
    self.preemption = preemption or preemption_lib.Preemption()
    self.trainer = trainer_lib.Trainer(
        strategy=strategy, method=self.method, optimizer=built.optimizer, global_step=self.state.global_step,
        task_index=self.state.task_index, global_batch_size=self.training.global_batch_size,
        grad_clip_norm=self.training.grad_clip_norm, grad_clip_scope=self.training.grad_clip_scope,
        jit_compile=self.training.jit_compile, stop_requested=self.preemption.should_stop,
        steps_per_loop=cadence.steps_per_device_loop, accelerator_steps=cadence.steps_per_loop)
    self.progress = reporting.ProgressAction(
        global_step=self.state.global_step, total_tasks=built.num_tasks, log_every_steps=cadence.log_every_steps,
        log_every_seconds=cadence.log_every_seconds, total_steps=built.task_starts[-1])
    summary_root = self.scratch or model_dir
    self.controller = orbit.Controller(  # Restores the newest readable checkpoint.
        global_step=self.state.global_step, trainer=self.trainer, strategy=strategy,
        steps_per_loop=cadence.steps_per_loop, checkpoint_manager=self.manager,
        summary_dir=os.path.join(summary_root, 'train'), train_actions=[self.progress])
    self.evals = evaluator_lib.ProtocolEvaluator(  # The protocols, side by side (engine/evaluator.py).
        strategy=strategy, method=self.method, benchmark=self.bench, protocols=evaluation.protocols,
        batch_size=self.eval_batch_size, drop_remainder_of=self.eval_drop_remainder_of,
        mixed_seed=evaluation.mixed_seed, reuse_fixed_features=evaluation.reuse_fixed_features,
        jit_compile=self.trainer.jit_compile)  # XLA where the train step uses it (engine/precision.py).
    self.reporter = reporting.Reporter(model_dir=model_dir, chief=writes, summary_root=summary_root, built=built,
                                       run_info=reporting.run_info(built, config_hash))
    self.record = reporting.EvalRecord.create(evaluation.protocols, evaluation.primary, built.num_tasks,
                                              len(self.bench.eval_names))
    self.reporter.restore_record(self.record, self.tasks_done)  # A resume: the histograms before the checkpoint.
    self.record.load(self.state.protocol_matrices.numpy())  # ... and the protocols' rows, from the checkpoint.
    self.acc = self.state.accuracy_matrix.numpy().astype(np.float64)

  @property
  def tasks_done(self) -> int:
    return int(self.state.tasks_done.numpy())

  def start(self, operative: str, mode: str) -> None:
    """Writes the run's files and says what runs where."""
    self.reporter.write_run_files(operative, mode, self.state.step)
    say(f'l2p-tf | {self.bench.name} ({self.bench.scenario}), {self.built.num_tasks} tasks, '
        f'{self.bench.num_classes} classes | {strategies.strategy_name(self.strategy)} '
        f'x{self.strategy.num_replicas_in_sync} | global batch {self.training.global_batch_size} | '
        f'{self.built.policy_name} | model_dir {self.model_dir}')
    say(self.method.describe())
    if self.manager.restored_path:
      say(f'Resuming from {self.manager.restored_path} (step {self.state.step}, {self.tasks_done} tasks finished).')

  # -- Training ---------------------------------------------------------------------------------------------------
  def train(self) -> dict:
    """Trains every unfinished task; returns the final results dict."""
    done = self.tasks_done
    res = self.results(self.acc, done)
    if done:  # The results files match the checkpoint (a kill can come between a checkpoint and its results).
      self.reporter.write_files(res, self.acc, done)
    for t in range(done, self.built.num_tasks):
      self.train_task(t)
      res = self.finish_task(t)
    if self.scratch:
      shutil.rmtree(self.scratch, ignore_errors=True)
    if res['complete']:
      f = res['final']
      say(f'Done: final avg_acc {f["avg_acc"]:.2f}, forgetting '
          f'{"-" if f["forgetting"] is None else format(f["forgetting"], ".2f")} -> {self.model_dir}/results.json')
    return res

  def train_task(self, t: int) -> None:
    """Trains task t from wherever the global step is (a resume starts mid-task) to its last step."""
    start, end = self.built.task_starts[t], self.built.task_starts[t + 1]
    self.state.task_index.assign(t)
    step = self.state.step
    if self.trainer.should_stop(step):  # A signal that came during data preparation or evaluation.
      self.stop(t)
    if step >= end:
      return
    if step == start:  # A task's fresh start (a resume inside it finds both done, in the checkpoint).
      if self.training.reset_optimizer_per_task:
        optimizers.reset_optimizer(self.built.optimizer)
      self.method.begin_task(t)
    task = self.bench.tasks[t]
    say(f'{reporting.stamp()} == Task {t + 1}/{self.built.num_tasks} ({task.name}): {len(task.classes)} classes, '
        f'{self.bench.num_train_examples(t)} examples, steps {step - start}/{end - start} done')
    self.trainer.train_dataset = self.strategy.distribute_datasets_from_function(
        lambda ctx: self.bench.train_dataset(t, ctx, global_batch_size=self.training.global_batch_size,
                                             seed=self.built.spec.seed, start_step=step - start))
    self.progress.begin_task(t, task.name, start, end, step)
    try:
      with self._step_errors(t):
        self.controller.train(steps=end)  # Saves a checkpoint at the task's end.
    finally:
      # Free the task's iterator here, by reference count. The trainer sits in reference cycles (its tf.functions
      # hold its bound methods), so an iterator left on it is freed later by Python's cycle collector, which can free
      # a multi-device iterator's parts in an order where tf.data's destructor waits forever for its own prefetch
      # thread (seen as a rare hang under MirroredStrategy).
      self.trainer.train_dataset = None

  @contextlib.contextmanager
  def _step_errors(self, t: int):
    """Turns what a train step can end with into the run's own outcome: a stop, a NaN report, a data error."""
    start, end, task = self.built.task_starts[t], self.built.task_starts[t + 1], self.bench.tasks[t]
    try:
      yield
    except trainer_lib.StopRequested:  # Stopped on request between two steps.
      self.stop(t)
    except trainer_lib.NonFiniteError as e:
      raise preemption_lib.NonFiniteLossError(
          f'NaN or Inf loss/gradient in train step {e.step + 1} (task {t + 1}/{self.built.num_tasks} {task.name}, '
          f'step {e.step - start + 1}/{end - start} of the task); its gradient was discarded and nothing was saved '
          f'after it: the newest checkpoint, {self.manager.latest_checkpoint or "none yet"}, is the last good state. '
          'Lower the learning rate or check the data; rerunning the same command resumes from that checkpoint '
          '(a changed config needs --overwrite, which moves this run aside).') from None
    except tf.errors.DataLossError as e:
      raise RuntimeError(self.bench.corrupt_data_message(f'training task {t + 1} ({task.name})', e)) from None

  def finish_task(self, t: int) -> dict:
    """After task t's last step: evaluate, checkpoint the new accuracy row, write results and summaries."""
    self.method.end_task(t)
    self.acc[t] = self.evaluate_after(t)
    self.state.accuracy_matrix.assign(self.acc.astype(np.float32))
    self.acc = self.state.accuracy_matrix.numpy().astype(np.float64)  # What a resumed run reads back, exactly.
    self.state.tasks_done.assign(t + 1)
    self._bank_wall_time()
    self.manager.save(check_interval=False, force=True)  # Same step as the task-end checkpoint, new name.
    usage = self.method.prompt_usage()
    res = self.results(self.acc, t + 1, usage)
    png = self.reporter.write_files(res, self.acc, t + 1)
    self.reporter.summarize_task(t, self.acc, res, usage, self.record, png, self.state.step)
    for line in self.reporter.task_lines(t, self.acc, res):
      say(line)
    return res

  def stop(self, t: int) -> None:
    """Checkpoint and results so far, then `PreemptedError` (every worker calls it at the same step)."""
    start, end, step = self.built.task_starts[t], self.built.task_starts[t + 1], self.state.step
    self._bank_wall_time()
    self.manager.save(check_interval=False)  # A no-op when this step's checkpoint exists.
    self.reporter.write_files(self.results(self.acc, t), self.acc, t)
    raise preemption_lib.PreemptedError(
        f'Preempted ({self.preemption.requested or "stop requested"}) at step {step}, task {t + 1}/'
        f'{self.built.num_tasks} ({step - start}/{end - start} steps); checkpoint written to '
        f'{self.manager.directory}. Rerun the same command to resume.')

  def _bank_wall_time(self) -> None:
    self.state.add_wall_time(time.time() - self.wall_start)
    self.wall_start = time.time()

  # -- Evaluation -------------------------------------------------------------------------------------------------
  def evaluate_after(self, t: int) -> np.ndarray:
    """Every protocol's evaluation after training segment t (recorded); returns the primary accuracy row."""
    start = time.perf_counter()
    rows = self.evals.evaluate_after(t, self.method.prompt_usage())
    self.record.add(t, rows)
    self.state.protocol_matrices.assign(self.record.to_array())
    self.record.load(self.state.protocol_matrices.numpy())  # What a resumed run reads back, exactly.
    primary = rows[self.record.primary].accuracy
    for i in self.bench.eval_ids_after(t):
      say(f'{reporting.stamp()} eval after task {t + 1}: {self.bench.eval_names[i]} {primary[i]:.2f}% '
          f'({self.record.primary} protocol)')
      logging.info('eval after task %d on %s: %.2f%%', t, self.bench.eval_names[i], primary[i])
    logging.info('eval after task %d: %s (%.1fs)', t, {p: np.nanmean(r.accuracy) for p, r in rows.items()},
                 time.perf_counter() - start)
    return primary

  def evaluate_only(self) -> dict:
    """--mode=eval: re-evaluates the newest task trained (the one in progress if training moved past its start)."""
    done = self.tasks_done
    in_progress = done < self.built.num_tasks and self.state.step > self.built.task_starts[done]
    t = done if in_progress else done - 1
    if t < 0:
      raise ValueError('The checkpoint has not trained any task yet; nothing to evaluate.')
    self.state.task_index.assign(t)
    acc = self.acc.copy()
    acc[t] = self.evaluate_after(t)
    res = self.results(acc, t + 1)
    self.reporter.write_eval_results(res)
    for line in self.bench.eval_lines(t, acc) + reporting.protocol_lines(res):
      say(line)
    return res

  def results(self, acc: np.ndarray, done: int, usage: Optional[np.ndarray] = None) -> dict:
    usage = self.method.prompt_usage() if usage is None else usage
    wall = float(self.state.wall_time.numpy()) + time.time() - self.wall_start
    return self.reporter.results(acc, done, usage, self.record, global_step=self.state.step, wall_time=wall,
                                 trace_count=self.trainer.trace_count)
