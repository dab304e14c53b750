"""Evaluates any method on distributed evaluation datasets, under the three evaluation protocols.

Every test example counts exactly once: the input pipeline pads the last batch and marks padding `valid=False`;
padded examples are excluded from the accuracy, from the prompt-selection histogram and (through `Method.predict`'s
`valid`) from anything that pools over the batch, such as L2P's batchwise prompt vote. Every example also carries
the index of its evaluation set ('task'), so the counts are kept per set even when a batch mixes sets.

Protocols (`PROTOCOLS`; `config.Evaluation.protocols` and `.primary` choose which run and which fills the accuracy
matrix):

* 'official': each task's test set on its own, batchwise prompt vote (the official L2P evaluation: a batch is always
  single-task, so the vote can leak the task's identity).
* 'per_sample': the same sets, each example selecting its own prompts (instancewise).
* 'mixed': the union of the seen tasks' test sets as one stream shuffled with a fixed seed
  (`ContinualBenchmark.mixed_eval_dataset`), batchwise vote: no batch knows its task. Each set's accuracy is
  recovered from the examples' set indices.

Besides the class-incremental accuracy, every protocol counts per set:

* task-incremental accuracy: the argmax over the logits of the set's own task's classes only
  (`ContinualBenchmark.eval_task_classes`); equal to the class-incremental accuracy where no task matches a set.
* task-identification accuracy (methods with a prompt pool): the share of examples whose selected prompts are all
  among their task's prompts. Task t's prompts are the `top_k` prompts task t selected most often in training
  (`Method.prompt_usage()` row t; ties go to the lower id). With the task-wise prompt mask on, training selects
  exactly the mask's ids [tN, (t+1)N), so the definition gives the mask ids. None for a task that never selected
  a prompt, and where the sets are not the tasks' test sets.

Frozen work reused: when the method says its fixed features (L2P: the [CLS] query of the frozen backbone) never change
(`Method.frozen_features_are_fixed`) and `reuse_fixed_features` is on, an evaluation of an evaluation set given a
`key` computes them once per batch, keeps them on the device (per set: (N, D) float32 for L2P) and hands them to
`predict` in every selection mode of this and each later evaluation of that set, so a set's query pass runs once per
run instead of once per selection per evaluation. The mixed stream, a different shuffle after every task, finds its
examples' kept features by their set ('task') and position in the set ('index', carried by every evaluation element):
the kept per-batch features of each seen set are gathered once into a per-example table on the host (when this host
holds every replica's results: one host, or TPU), stacked, placed on each replica and indexed inside the step. The
predictions are those of recomputing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from l2p_tf.methods import base as method_base

SELECTIONS = ('batchwise', 'instancewise')
PROTOCOLS = ('official', 'per_sample', 'mixed')
# (prompt selection, stream) of each protocol.
PROTOCOL_SETTINGS = {'official': ('batchwise', 'per_task'), 'per_sample': ('instancewise', 'per_task'),
                     'mixed': ('batchwise', 'mixed')}
COUNTS = ('correct', 'til_correct', 'count', 'task_id_correct')


def check_protocols(protocols: Sequence[str], primary: str) -> None:
  """Raises ValueError quoting the value when a protocol is unknown, repeated, or `primary` is not among them."""
  if not protocols:
    raise ValueError(f'protocols must name at least one evaluation protocol of {PROTOCOLS}, got {protocols!r}.')
  for p in protocols:
    if p not in PROTOCOLS:
      raise ValueError(f'Unknown evaluation protocol {p!r}; use one of {PROTOCOLS}.')
  if len(set(protocols)) != len(protocols):
    raise ValueError(f'protocols names a protocol twice: {tuple(protocols)!r}.')
  if primary not in protocols:
    raise ValueError(f'primary={primary!r} is not among the evaluated protocols {tuple(protocols)!r}.')


def task_prompt_sets(usage: Optional[np.ndarray], top_k: int, num_sets: int) -> Optional[np.ndarray]:
  """bool (num_sets, pool_size): row t marks task t's prompts, the `top_k` prompts task t selected most often in
  training (ties: the lower id); a row of a task without recorded usage (or beyond the usage rows) is all False.
  None without a pool."""
  if usage is None or not top_k:
    return None
  usage = np.asarray(usage, np.float64)
  sets = np.zeros((num_sets, usage.shape[1]), bool)
  for t in range(min(num_sets, usage.shape[0])):
    if usage[t].sum() > 0:
      sets[t, np.argsort(-usage[t], kind='stable')[:top_k]] = True
  return sets


def class_masks(set_classes: Sequence[Optional[Sequence[int]]], num_classes: int) -> np.ndarray:
  """bool (num_sets, num_classes): each set's task-incremental logit mask (all classes where the set has none)."""
  masks = np.ones((len(set_classes), num_classes), bool)
  for i, classes in enumerate(set_classes):
    if classes is not None:
      masks[i] = False
      masks[i, list(classes)] = True
  return masks


class Evaluator:
  """Counts correct predictions (class- and task-incremental), task identifications and prompt selections per set.

  Args:
    strategy: the method's strategy.
    method: a built `Method`.
    selections: prompt-selection modes to evaluate ('batchwise', 'instancewise'); the first is the primary one. A
      method without a prompt pool is evaluated once, under the first name.
    set_masks: bool (num_sets, num_classes), each evaluation set's task-incremental logit mask; None: one set, no
      task-incremental mask (task-incremental = class-incremental).
    reuse_fixed_features: keep each keyed evaluation set's fixed features for later evaluations (module docstring);
      used only when the method's `frozen_features_are_fixed`.
    jit_compile: XLA-compile the per-replica evaluation step and fixed-feature pass (a run passes its train step's
      resolved setting: on this repository's 2-core CPU, XLA halved the quickstart's evaluation time).
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, method: method_base.Method,
               selections: Sequence[str] = ('batchwise',), set_masks: Optional[np.ndarray] = None,
               reuse_fixed_features: bool = False, jit_compile: bool = False):
    if not selections:
      raise ValueError('selections must name at least one prompt-selection mode, got an empty sequence.')
    for s in selections:
      if s not in SELECTIONS:
        raise ValueError(f'Unknown prompt selection {s!r}; use one of {SELECTIONS}.')
    self.strategy = strategy
    self.method = method
    self.pool_size = method.pool_size
    self.set_masks = None if set_masks is None else np.asarray(set_masks, bool)
    self.num_sets = 1 if set_masks is None else len(self.set_masks)
    self.selections = tuple(selections) if self.pool_size else (selections[0],)
    self.jit_compile = bool(jit_compile)
    # reduce_retracing: a stacked feature table given without `table_rows` changes shape with the seen sets.
    self._steps = {s: tf.function(self._make_step(s if self.pool_size else None), reduce_retracing=True)
                   for s in self.selections}
    self.reuse = bool(reuse_fixed_features) and method.frozen_features_are_fixed
    self._fixed = {}  # key -> [per-batch fixed features (per-replica values)], in the dataset's batch order.
    self._positions = {}  # key -> [per-batch ((index, valid) host arrays per local replica) or None], as _fixed.
    self._tables = {}  # key -> {name: (N, ...) host array in the set's order}, or None where it cannot be built.
    fixed_fn = tf.function(method.fixed_features, jit_compile=True) if self.jit_compile else method.fixed_features
    self._fixed_step = tf.function(lambda batch: strategy.run(fixed_fn, args=(batch['image'],)))

  def _make_step(self, selection) -> Callable:
    num_sets, pool = self.num_sets, max(self.pool_size, 1)

    def replica_fn(batch, masks, prompt_sets, fixed, table, offsets):
      if table is not None:  # Each example's row: its set's offset in the stacked table plus its place in the set.
        rows = tf.gather(offsets, tf.cast(batch['task'], tf.int32)) + tf.cast(batch['index'], tf.int32)
        fixed = tf.nest.map_structure(lambda t: tf.gather(t, rows), table)
      kwargs = {} if fixed is None else {'fixed': fixed}
      out = self.method.predict(batch['image'], valid=batch['valid'], selection=selection, **kwargs)
      valid = tf.cast(batch['valid'], tf.float32)
      task = batch['task'] if 'task' in batch else tf.zeros_like(batch['label'], tf.int32)
      task = tf.cast(task, tf.int32)
      label = tf.cast(batch['label'], tf.int32)
      logits = tf.cast(out['logits'], tf.float32)
      correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), label), tf.float32) * valid
      own = tf.gather(masks, task) if masks is not None else tf.ones_like(logits, tf.bool)
      til_logits = tf.where(own, logits, tf.fill(tf.shape(logits), float('-inf')))
      til = tf.cast(tf.equal(tf.argmax(til_logits, axis=-1, output_type=tf.int32), label), tf.float32) * valid
      if self.pool_size:
        ids = tf.cast(out['prompt_ids'], tf.int32)
        hits = tf.gather(tf.gather(prompt_sets, task), ids, batch_dims=1)  # (b, N): selected prompt is the task's.
        task_id = tf.cast(tf.reduce_all(hits, axis=1), tf.float32) * valid
        hist = tf.reduce_sum(tf.one_hot(ids, pool, dtype=tf.float32), axis=1) * valid[:, None]
      else:
        task_id = tf.zeros_like(valid)
        hist = tf.zeros([tf.shape(valid)[0], pool], tf.float32)
      per_set = lambda x: tf.math.unsorted_segment_sum(x, task, num_sets)
      return per_set(correct), per_set(til), per_set(valid), per_set(task_id), per_set(hist)

    replica = tf.function(replica_fn, jit_compile=True) if self.jit_compile else replica_fn

    def step(batch, masks, prompt_sets, fixed=None, table=None, offsets=None):
      per_replica = self.strategy.run(replica, args=(batch, masks, prompt_sets, fixed, table, offsets))
      return tuple(self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None) for x in per_replica)

    return step

  def evaluate(self, dataset, *, task_prompts: Optional[np.ndarray] = None,
               selections: Optional[Sequence[str]] = None, key=None,
               tables: Optional[Mapping[int, dict]] = None, table_rows: int = 0) -> dict[str, dict]:
    """Evaluates one distributed dataset in every selection mode (or those of `selections`).

    Args:
      dataset: distributed batches {'image', 'label', 'valid'} and optionally 'task' (the set index; default 0).
      task_prompts: bool (num_sets, pool_size) from `task_prompt_sets`, for the task-identification counts (None:
        none are counted).
      selections: a subset of `self.selections` (default: all).
      key: names the evaluation set for the reuse of its fixed features (module docstring; the dataset must give
        the same batches every time); None reuses nothing.
      tables: {set index: `fixed_table`} covering every example of `dataset` (whose elements carry 'task' and
        'index'), e.g. the mixed stream's seen sets: their features are looked up instead of computed. Not with
        `key`.
      table_rows: pad the stacked tables to this many rows (one shape for every evaluation of a run: one compiled
        step under XLA, not one per number of seen sets).

    Returns:
      {selection: {'accuracy': percent, 'correct': int, 'count': int, 'prompt_histogram': np.ndarray (M,),
      'per_set': {'correct', 'til_correct', 'count', 'task_id_correct': float (num_sets,),
      'histogram': float (num_sets, M)}}}.
    """
    masks = None if self.set_masks is None else tf.constant(self.set_masks)
    prompt_sets = tf.constant(task_prompts if task_prompts is not None else
                              np.zeros((self.num_sets, max(self.pool_size, 1)), bool))
    if key is not None and tables is not None:
      raise ValueError('evaluate takes a set key (its own kept features) or tables (looked up), not both.')
    fixed = self.fixed_features(dataset, key)
    table, offsets = self._stacked(tables, table_rows) if tables else (None, None)
    results = {}
    for selection in (selections or self.selections):
      sums = [np.zeros(self.num_sets, np.float64) for _ in COUNTS] + [
          np.zeros((self.num_sets, max(self.pool_size, 1)), np.float64)]
      batches = 0
      for batch in dataset:
        out = self._steps[selection](batch, masks, prompt_sets, None if fixed is None else fixed[batches],
                                     table, offsets)
        batches += 1
        for acc, x in zip(sums, out):
          acc += x.numpy()
      if fixed is not None and batches != len(fixed):
        raise ValueError(f'Evaluation set {key!r} gave {batches} batches, its kept features {len(fixed)}: the '
                         'dataset must give the same batches every time.')
      per_set = dict(zip(COUNTS + ('histogram',), sums))
      correct, count = per_set['correct'].sum(), per_set['count'].sum()
      if count == 0:
        raise ValueError('The evaluation dataset has no valid examples; check the task and its test split.')
      per_set['histogram'] = per_set['histogram'][:, :self.pool_size]
      results[selection] = {'accuracy': 100.0 * correct / count, 'correct': int(correct), 'count': int(count),
                            'prompt_histogram': per_set['histogram'].sum(0), 'per_set': per_set}
    return results


  def fixed_features(self, dataset, key) -> Optional[list]:
    """The kept per-batch fixed features of evaluation set `key`, computed on its first evaluation (None: no reuse)."""
    if not self.reuse or key is None:
      return None
    if key not in self._fixed:
      kept, positions = [], []
      for batch in dataset:
        kept.append(self._fixed_step(batch))
        positions.append(self._local_positions(batch))
      self._fixed[key], self._positions[key] = kept, positions
      self._tables.pop(key, None)
    return self._fixed[key]

  def fixed_table(self, dataset, key) -> Optional[dict]:
    """Evaluation set `key`'s fixed features per example, {name: (N, ...) np.ndarray} in the order of the set's
    'index' (computed on first use, as `fixed_features`). None without reuse, for batches without 'index', or where
    this host does not hold every example's features (multi-worker)."""
    if self.fixed_features(dataset, key) is None:
      return None
    if key not in self._tables:
      self._tables[key] = self._build_table(key)
    return self._tables[key]

  def forget(self, key) -> None:
    """Drops what is kept for evaluation set `key` (it is computed again at its next evaluation)."""
    for kept in (self._fixed, self._positions, self._tables):
      kept.pop(key, None)

  def _local_positions(self, batch) -> Optional[tuple]:
    if not isinstance(batch, Mapping) or 'index' not in batch or 'valid' not in batch:
      return None
    local = self.strategy.experimental_local_results
    return tuple((i.numpy(), v.numpy()) for i, v in zip(local(batch['index']), local(batch['valid'])))

  def _build_table(self, key) -> Optional[dict]:
    positions = self._positions[key]
    if not positions or any(p is None for p in positions):
      return None
    index, values = [], {}
    for kept, per_replica in zip(self._fixed[key], positions):
      local = {name: self.strategy.experimental_local_results(x) for name, x in kept.items()}
      for r, (idx, ok) in enumerate(per_replica):
        index.append(idx[ok])
        for name, xs in local.items():
          values.setdefault(name, []).append(xs[r].numpy()[ok])
    index = np.concatenate(index)
    if not np.array_equal(np.sort(index), np.arange(len(index))):
      return None  # Not every example of the set (other hosts hold the rest), or positions repeated.
    order = np.argsort(index, kind='stable')
    return {name: np.concatenate(xs)[order] for name, xs in values.items()}

  def _stacked(self, tables: Mapping[int, dict], rows: int = 0) -> tuple:
    """The sets' tables stacked in set order (zero rows after them up to `rows`), as a value on every replica, and
    each set's first row."""
    ids = sorted(tables)
    offsets = np.zeros(self.num_sets, np.int32)
    start = 0
    for i in ids:
      offsets[i] = start
      start += len(next(iter(tables[i].values())))
    pad = lambda x: np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)]) if rows > len(x) else x
    stacked = {name: pad(np.concatenate([tables[i][name] for i in ids])) for name in tables[ids[0]]}
    table = self.strategy.experimental_distribute_values_from_function(
        lambda ctx: {name: tf.constant(x) for name, x in stacked.items()})
    return table, tf.constant(offsets)


@dataclasses.dataclass
class ProtocolRow:
  """One protocol's results after one training segment, per evaluation set (NaN where not evaluated).

  Attributes:
    accuracy: class-incremental accuracy (%) per set.
    til: task-incremental accuracy (%) per set.
    task_id: task-identification accuracy (%) per set (NaN without a pool or without task prompts).
    count: examples evaluated per set.
    histograms: {set name: prompt-selection counts}.
  """
  accuracy: np.ndarray
  til: np.ndarray
  task_id: np.ndarray
  count: np.ndarray
  histograms: dict


class ProtocolEvaluator:
  """Runs the configured protocols over a benchmark's evaluation sets after each training segment.

  Args:
    strategy, method: as `Evaluator`.
    benchmark: the `ContinualBenchmark` (evaluation sets, mixed stream, task classes).
    protocols: the protocols to run (`PROTOCOLS`).
    batch_size: global evaluation batch.
    drop_remainder_of: the official last-partial-batch drop (see `ContinualBenchmark.eval_dataset`); the mixed
      stream holds the same examples.
    mixed_seed: the mixed stream's shuffle seed.
    reuse_fixed_features: keep each evaluation set's fixed features for later evaluations (`Evaluator`).
    jit_compile: XLA-compile the evaluation steps (`Evaluator`).
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, method: method_base.Method, benchmark,
               protocols: Sequence[str], batch_size: int, drop_remainder_of: Optional[int] = None,
               mixed_seed: int = 0, reuse_fixed_features: bool = False, jit_compile: bool = False):
    check_protocols(protocols, protocols[0] if protocols else '')
    self.strategy, self.method, self.bench = strategy, method, benchmark
    self.protocols = tuple(protocols)
    self.batch_size, self.drop_remainder_of, self.mixed_seed = batch_size, drop_remainder_of, mixed_seed
    self.set_classes = [benchmark.eval_task_classes(i) for i in range(len(benchmark.eval_names))]
    self.task_aligned = all(c is not None for c in self.set_classes)
    selections = sorted({PROTOCOL_SETTINGS[p][0] for p in self.protocols}, key=SELECTIONS.index)
    self.evaluator = Evaluator(strategy=strategy, method=method, selections=selections,
                               set_masks=class_masks(self.set_classes, benchmark.num_classes),
                               reuse_fixed_features=reuse_fixed_features, jit_compile=jit_compile)
    self._datasets = {}
    self._table_rows = 0  # Rows of every evaluation set together: the mixed stream's table, one shape per run.

  def _dataset(self, key):
    if key not in self._datasets:
      if key[0] == 'set':
        fn = lambda ctx: self.bench.eval_dataset(key[1], ctx, global_batch_size=self.batch_size,
                                                 drop_remainder_of=self.drop_remainder_of)
      else:  # The stream of the previous task's seen sets is not needed again.
        self._datasets = {k: v for k, v in self._datasets.items() if k[0] != 'mixed'}
        fn = lambda ctx: self.bench.mixed_eval_dataset(list(key[1]), ctx, global_batch_size=self.batch_size,
                                                       seed=self.mixed_seed, drop_remainder_of=self.drop_remainder_of)
      self._datasets[key] = self.strategy.distribute_datasets_from_function(fn)
    return self._datasets[key]

  def task_prompts(self, usage: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Each task's prompts (`task_prompt_sets`) where the sets are the tasks' test sets; None otherwise."""
    if not self.task_aligned:
      return None
    return task_prompt_sets(usage, getattr(self.method, 'prompts_per_image', 0), len(self.bench.eval_names))

  def evaluate_after(self, t: int, usage: Optional[np.ndarray]) -> dict[str, ProtocolRow]:
    """{protocol: ProtocolRow} after training segment t, over the sets `eval_ids_after(t)`."""
    seen = self.bench.eval_ids_after(t)
    prompts = self.task_prompts(usage)
    per_set = {}  # (selection, stream) -> per-set counts
    for p in self.protocols:
      key = self._key(p)
      if key in per_set:  # A method without a pool: 'official' and 'per_sample' are one evaluation.
        continue
      selection, stream = key
      if stream == 'mixed':
        per_set[key] = self.evaluator.evaluate(self._dataset(('mixed', tuple(seen))), task_prompts=prompts,
                                               selections=(selection,), tables=self._tables(seen),
                                               table_rows=self._table_rows)[selection]['per_set']
      else:
        sums = None
        for i in seen:
          res = self.evaluator.evaluate(self._dataset(('set', i)), task_prompts=prompts, selections=(selection,),
                                        key=('set', i))[selection]['per_set']
          sums = res if sums is None else {k: sums[k] + res[k] for k in sums}
        per_set[key] = sums
    return {p: self._row(per_set[self._key(p)], seen, prompts) for p in self.protocols}

  def _tables(self, seen: Sequence[int]) -> Optional[dict[int, dict]]:
    """The seen sets' kept feature tables for the mixed stream (each computed from its set on first use); None
    without reuse or when one cannot be built here (the stream then computes its features)."""
    if not self.evaluator.reuse:
      return None
    tables = {}
    for i in seen:
      tables[i] = self.evaluator.fixed_table(self._dataset(('set', i)), ('set', i))
      if tables[i] is None:
        return None
    if not self._table_rows:
      self._table_rows = sum(self._kept_examples(i) for i in range(len(self.bench.eval_names)))
    return tables

  def _kept_examples(self, i: int) -> int:
    n = self.bench.num_eval_examples(i)
    return n // self.drop_remainder_of * self.drop_remainder_of if self.drop_remainder_of else n

  def _key(self, protocol: str) -> tuple[str, str]:
    """(selection, stream) the protocol evaluates with this method (one mode for a method without a pool)."""
    selection, stream = PROTOCOL_SETTINGS[protocol]
    sel = self.evaluator.selections
    return (selection if selection in sel else sel[0]), stream

  def _row(self, counts: dict, seen: Sequence[int], prompts: Optional[np.ndarray]) -> ProtocolRow:
    n = len(self.bench.eval_names)
    row = ProtocolRow(accuracy=np.full(n, np.nan), til=np.full(n, np.nan), task_id=np.full(n, np.nan),
                      count=np.full(n, np.nan), histograms={})
    for i in seen:
      count = counts['count'][i]
      row.count[i] = count
      row.accuracy[i] = 100.0 * counts['correct'][i] / count
      row.til[i] = 100.0 * counts['til_correct'][i] / count
      if self.method.pool_size and prompts is not None and prompts[i].any():
        row.task_id[i] = 100.0 * counts['task_id_correct'][i] / count
      if self.method.pool_size:
        row.histograms[self.bench.eval_names[i]] = counts['histogram'][i].tolist()
    return row
