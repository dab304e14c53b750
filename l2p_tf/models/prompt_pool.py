"""L2P prompt pool: learnable prompts with keys, query-key matching, top-N selection and the pull term.

Follows `models/prompt.py` of google-research/l2p at HEAD (the `prompt_pool=True`, `prompt_key=True`, non-prefix path):

    sim        = cos(query, key_i)                    (B, M), both sides l2-normalised as x * rsqrt(max(sum x^2, 1e-12))
    ids        = top-N of sim per example             ties go to the lower id (JAX `lax.top_k`, `tf.math.top_k` alike)
    batchwise  : count the ids picked across the vote group, keep the N most counted (ties to the lower id) and
                 use them for every example of the group. A vote group is `vote_size` consecutive examples of the
                 replica batch (the whole replica batch when None or larger): the original votes inside each device
                 batch under `pmap` (per_device_batch_size = 16, in training and evaluation), so `vote_size = 16`
                 gives its votes on any number of replicas and with larger evaluation batches
    task mask  : in training, task t uses ids [tN, (t+1)N) when (t+1)N <= M, whatever the query (the original
                 replaces the selected ids by the mask); otherwise matching is free. Pools too small for every task
                 (N * num_tasks > M) are refused unless `task_mask_overflow='free'` accepts that fallback
    reduce_sim = sum over the N selected keys of cos(query, key), mean over the batch

Frequency-penalised matching (paper Eq. 4, `diversity='frequency'`, training only; the official code does not have
it) is implemented literally:

    K_x = argmin over N-subsets S of  sum_{i in S} gamma(q(x), k_i) * h_i

with gamma the cosine distance 1 - cos(q, k_i) and h_i = n_i / sum_j n_j the normalised number of times prompt i was
selected in the tasks before the current one (rows [0, t) of `usage`, summed over replicas). Because the sum
separates, the argmin is the N prompts with the smallest gamma * h (ties to the lower id). A prompt never selected
before has h_i = 0 and is therefore preferred, which is the intended push towards unused prompts. When there is no
earlier usage (the first task, or no task index) plain matching (Eq. 3) is used, as at test time. The selected
prompts then go through the batchwise vote as usual, and `reduce_sim` is still the plain cosine of the selected keys.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

SELECTIONS = ('batchwise', 'instancewise')
DIVERSITIES = ('task_mask', 'frequency', 'none')
OVERFLOWS = ('error', 'free')
INITIALIZERS = ('uniform', 'uniform_01', 'uniform_pm1', 'normal', 'zeros')


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
  """`x * rsqrt(max(sum(x^2), epsilon))` along `axis`, as the original `l2_normalize`."""
  square_sum = tf.reduce_sum(tf.square(x), axis=axis, keepdims=True)
  return x * tf.math.rsqrt(tf.maximum(square_sum, epsilon))


def make_initializer(name: str) -> tf_keras.initializers.Initializer:
  """Initializer for prompts and keys by name.

  'uniform' is flax's `nn.initializers.uniform()` (U[0, 0.01), the original default), 'uniform_01' is U[0, 1)
  (torch's `nn.init.uniform_`, CODA-Prompt's L2P++ and DualPrompt), 'uniform_pm1' is U(-1, 1),
  'normal' is flax's `nn.initializers.normal()` (N(0, 0.01^2)), 'zeros' is zeros.

  Raises:
    ValueError: unknown `name`.
  """
  if name == 'uniform':
    return tf_keras.initializers.RandomUniform(0.0, 0.01)
  if name == 'uniform_01':
    return tf_keras.initializers.RandomUniform(0.0, 1.0)
  if name == 'uniform_pm1':
    return tf_keras.initializers.RandomUniform(-1.0, 1.0)
  if name == 'normal':
    return tf_keras.initializers.RandomNormal(stddev=0.01)
  if name == 'zeros':
    return tf_keras.initializers.Zeros()
  raise ValueError(f'Unknown initializer {name!r}; choose one of {INITIALIZERS}.')


def check_selection(selection: str) -> str:
  """Returns `selection` if it is one of `SELECTIONS`.

  Raises:
    ValueError: unknown `selection`.
  """
  if selection not in SELECTIONS:
    raise ValueError(f'Unknown selection {selection!r}; choose one of {SELECTIONS}.')
  return selection


def top_k_ids(scores, k: int):
  """Indices of the `k` largest `scores` along the last axis, best first; equal scores go to the lower index."""
  # tf.math.top_k documents the same tie rule as jax.lax.top_k: "the lower-index element appears first".
  return tf.math.top_k(scores, k=k, sorted=True).indices


def selection_counts(ids, pool_size: int, weights=None):
  """How often each id occurs in `ids` (B, k), each example weighted by `weights` (B,) if given: (M,) float32."""
  # A one-hot sum rather than tf.math.bincount: it compiles under XLA (TPU) with a static shape.
  one_hot = tf.one_hot(ids, pool_size, dtype=tf.float32)  # (B, k, M)
  if weights is not None:
    one_hot *= tf.cast(weights, tf.float32)[:, tf.newaxis, tf.newaxis]
  return tf.reduce_sum(one_hot, axis=[0, 1])


def batchwise_vote(ids, pool_size: int, k: int, weights=None, group_size: Optional[int] = None):
  """Majority vote of a batch's selections, in groups of `group_size` consecutive examples.

  Args:
    ids: (B, k) int selected ids per example.
    pool_size: M.
    k: how many ids to keep.
    weights: optional (B,) vote weight per example (0 for padding).
    group_size: examples per vote: rows [0, g), [g, 2g), ... vote separately (a last, shorter group when B is not a
      multiple); None: the whole batch votes once.

  Returns:
    (B, k) int32: per group, the `k` ids picked most often in it (ties to the lower id), for each of its examples.
  """
  if group_size is None:
    major = top_k_ids(selection_counts(ids, pool_size, weights), k)
    return tf.tile(major[tf.newaxis], [tf.shape(ids)[0], 1])
  batch = tf.shape(ids)[0]
  groups = (batch + group_size - 1) // group_size
  per_example = tf.reduce_sum(tf.one_hot(ids, pool_size, dtype=tf.float32), axis=1)  # (B, M)
  if weights is not None:
    per_example *= tf.cast(weights, tf.float32)[:, tf.newaxis]
  per_example = tf.pad(per_example, [[0, groups * group_size - batch], [0, 0]])
  counts = tf.reduce_sum(tf.reshape(per_example, [groups, group_size, pool_size]), axis=1)  # (G, M)
  major = tf.cast(top_k_ids(counts, k), tf.int32)  # (G, k)
  return tf.repeat(major, group_size, axis=0)[:batch]


def check_vote_batch(vote_size: Optional[int], batch_per_replica: int, what: str) -> None:
  """Refuses a replica batch whose vote groups would not all have `vote_size` examples.

  A replica batch of at most `vote_size` examples votes as one group (the official geometry on fewer examples per
  device); a larger one must be a multiple of it, or its last group would vote with fewer examples than the rest.

  Raises:
    ValueError: naming `what` (e.g. 'eval_batch_size=500 over 1 replica') and the sizes.
  """
  if vote_size and batch_per_replica > vote_size and batch_per_replica % vote_size:
    raise ValueError(f'{what} gives {batch_per_replica} examples per replica, more than the prompt pool\'s '
                     f'vote_size={vote_size} and not a multiple of it: the last vote group of every batch would be '
                     f'smaller. Use a multiple of {vote_size} per replica (e.g. '
                     f'{-(-batch_per_replica // vote_size) * vote_size}).')


class PromptPool(tf_keras.layers.Layer):
  """A pool of M prompts (Lp tokens each) with keys; each input selects N of them by its query.

  Variables (created in the constructor, so a checkpoint can be restored before the first step):
    prompts: (M, Lp, D) trainable.
    keys: (M, D) trainable; absent (None) when `use_key=False`, where a prompt's key is the mean of its tokens.
    usage: (num_tasks, M) float32, non-trainable; usage[t, i] counts how often prompt i was selected (per example)
      in training batches of task t. Synchronised ON_READ with SUM aggregation: under a distribution strategy each
      replica counts its own examples and a read in cross-replica context (evaluation summaries, checkpoints) gives
      the total.

  The layer computes in float32 whatever the global mixed-precision policy (its dtype defaults to 'float32').

  Args:
    embed_dim: token width D (the ViT hidden size).
    pool_size: M, number of prompts.
    prompt_length: Lp, tokens per prompt.
    top_k: N, prompts selected per example.
    num_tasks: rows of the usage record (the number of tasks of the benchmark).
    selection: 'batchwise' (majority vote over each vote group, the original default) or 'instancewise'.
    vote_size: examples per batchwise vote: consecutive groups of this many examples of the replica batch vote
      separately, in training and evaluation (the original: 16, its per-device batch); None: the whole replica batch.
    diversity: 'task_mask' (training task t uses prompts [tN, (t+1)N) while they fit), 'frequency' (paper Eq. 4,
      see the module docstring) or 'none'. Only active in training with a task index.
    shared_prompt_pool: at the start of each task t > 0 whose ids [tN, (t+1)N) fit, copy the prompts of task t-1's
      ids [(t-1)N, tN) into them (`start_task`; keys are not copied): the official `shared_prompt_pool`, on in its
      5-datasets config, so each task's masked prompts start from the previous task's.
    task_mask_overflow: what `diversity='task_mask'` does when `top_k * num_tasks > pool_size` (the later tasks'
      ids do not fit): 'error' (default) refuses at construction; 'free' lets those tasks match freely, as the
      official code does when its mask is on (`use_prompt_mask`; its CIFAR-100 configs leave the mask off).
    prompt_init: initializer of the prompts, one of `INITIALIZERS`.
    key_init: initializer of the keys, one of `INITIALIZERS`.
    use_key: learnable keys; False uses the mean of each prompt's tokens as its key.
    name: layer name.
    dtype: variable dtype (float32 by default, whatever the global mixed-precision policy).

  Raises:
    ValueError: a non-positive size, `top_k` > `pool_size`, an unknown selection / diversity / initializer, or a
      task mask that does not fit with `task_mask_overflow='error'`.
  """

  def __init__(self, *, embed_dim: int, pool_size: int = 10, prompt_length: int = 10, top_k: int = 4,
               num_tasks: int = 1, selection: str = 'batchwise', vote_size: Optional[int] = None,
               diversity: str = 'task_mask', shared_prompt_pool: bool = False,
               task_mask_overflow: str = 'error', prompt_init: str = 'uniform', key_init: str = 'uniform', use_key: bool = True,
               name: str = 'prompt_pool', dtype='float32'):
    # Explicit name/dtype instead of **kwargs: gin then rejects a misspelt parameter when it parses the binding.
    super().__init__(name=name, dtype=dtype)
    for arg, value in (('embed_dim', embed_dim), ('pool_size', pool_size), ('prompt_length', prompt_length),
                       ('top_k', top_k), ('num_tasks', num_tasks)) + ((('vote_size', vote_size),) if vote_size is not
                                                                     None else ()):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'{arg} must be a positive integer, got {value!r}.')
    if top_k > pool_size:
      raise ValueError(f'top_k={top_k} is larger than pool_size={pool_size}.')
    check_selection(selection)
    if diversity not in DIVERSITIES:
      raise ValueError(f'Unknown diversity {diversity!r}; choose one of {DIVERSITIES}.')
    if task_mask_overflow not in OVERFLOWS:
      raise ValueError(f'Unknown task_mask_overflow {task_mask_overflow!r}; choose one of {OVERFLOWS}.')
    if diversity == 'task_mask' and task_mask_overflow == 'error' and top_k * num_tasks > pool_size:
      raise ValueError(
          f"The task-wise prompt mask needs pool_size >= top_k * num_tasks, but pool_size={pool_size}, top_k={top_k}, "
          f"num_tasks={num_tasks} ({top_k * num_tasks} prompts): tasks from {pool_size // top_k + 1} on would have no "
          f"prompts of their own. Use POOL_SIZE >= {top_k * num_tasks}, or diversity='frequency' or 'none', or "
          "task_mask_overflow='free' to let those tasks match freely as the official code does.")
    self.embed_dim = embed_dim
    self.pool_size = pool_size
    self.prompt_length = prompt_length
    self.top_k = top_k
    self.num_tasks = num_tasks
    self.selection = selection
    self.vote_size = vote_size
    self.shared_prompt_pool = bool(shared_prompt_pool)
    self.diversity = diversity
    self.task_mask_overflow = task_mask_overflow
    self.use_key = use_key

    self.prompts = self.add_weight(
        name='prompts', shape=(pool_size, prompt_length, embed_dim), dtype=tf.float32,
        initializer=make_initializer(prompt_init), trainable=True)
    key_initializer = make_initializer(key_init)  # Validated even when unused.
    self.keys = (self.add_weight(name='keys', shape=(pool_size, embed_dim), dtype=tf.float32,
                                 initializer=key_initializer, trainable=True)
                 if use_key else None)
    self.usage = self.add_weight(
        name='usage', shape=(num_tasks, pool_size), dtype=tf.float32, initializer='zeros', trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.SUM)
    self.built = True

  def start_task(self, task: int) -> bool:
    """Per-task hook, called once when task `task` starts training (not on a resume mid-task).

    With `shared_prompt_pool`, copies prompts [(t-1)N, tN) into [tN, (t+1)N) when both ranges fit in the pool, as
    the official code does before each task; otherwise does nothing.

    Returns:
      Whether prompts were copied.
    """
    n, t = self.top_k, int(task)
    if not self.shared_prompt_pool or t <= 0 or (t + 1) * n > self.pool_size:
      return False
    prompts = tf.convert_to_tensor(self.prompts)
    self.prompts.assign(tf.concat([prompts[:t * n], prompts[(t - 1) * n:t * n], prompts[(t + 1) * n:]], axis=0))
    return True

  @property
  def num_prompt_tokens(self) -> int:
    """N * Lp: the number of tokens the selected prompts add to a sequence."""
    return self.top_k * self.prompt_length

  def call(self, query, *, task_index=None, training=False, selection: Optional[str] = None, valid=None) -> dict:
    """Selects prompts for each query.

    Args:
      query: (B, D) query features (the frozen model's [CLS] output).
      task_index: scalar int tensor or variable, the current training task; None disables the diversity rule and
        the usage record.
      training: the task mask / frequency penalty and the usage record apply only in training.
      selection: overrides `self.selection` ('batchwise' or 'instancewise') for this call.
      valid: optional (B,) bool, False for padding examples: they do not vote, are not recorded in `usage` and do
        not enter `reduce_sim` (None: every example is real).

    Returns:
      {'prompts': (B, N * Lp, D) float32 (prompt tokens in selection order), 'prompt_ids': (B, N) int32,
       'reduce_sim': scalar float32}.

    Raises:
      ValueError: unknown `selection`.
    """
    selection = self.selection if selection is None else check_selection(selection)
    training = bool(training)
    n, m = self.top_k, self.pool_size
    query = tf.cast(query, tf.float32)
    prompts = tf.convert_to_tensor(self.prompts)
    keys = tf.convert_to_tensor(self.keys) if self.use_key else tf.reduce_mean(prompts, axis=1)
    key_norm = l2_normalize(keys)
    query_norm = l2_normalize(query)
    sim = tf.matmul(query_norm, key_norm, transpose_b=True)  # (B, M)

    active = training and task_index is not None
    task = tf.cast(task_index, tf.int32) if task_index is not None else None
    scores = sim
    if active and self.diversity == 'frequency':
      scores = self._frequency_scores(sim, task)
    ids = top_k_ids(scores, n)
    weights = None if valid is None else tf.cast(valid, tf.float32)
    if selection == 'batchwise':
      ids = batchwise_vote(ids, m, n, weights, group_size=self.vote_size)
    if active and self.diversity == 'task_mask':
      fixed = task * n + tf.range(n, dtype=tf.int32)
      ids = tf.where((task + 1) * n <= m, tf.broadcast_to(fixed[tf.newaxis], tf.shape(ids)), ids)
    ids = tf.cast(ids, tf.int32)

    selected_keys = tf.gather(key_norm, ids)  # (B, N, D)
    per_example_sim = tf.reduce_sum(selected_keys * query_norm[:, tf.newaxis, :], axis=[1, 2])  # (B,)
    if weights is None:
      reduce_sim = tf.reduce_mean(per_example_sim)
    else:
      reduce_sim = tf.math.divide_no_nan(tf.reduce_sum(per_example_sim * weights), tf.reduce_sum(weights))
    batched = tf.gather(prompts, ids)  # (B, N, Lp, D)
    batched = tf.reshape(batched, [tf.shape(ids)[0], self.num_prompt_tokens, self.embed_dim])

    if active:
      self._record_usage(ids, task, weights)
    return {'prompts': batched, 'prompt_ids': ids, 'reduce_sim': reduce_sim}

  def _record_usage(self, ids, task, weights):
    """Adds this (replica) batch's selections (of real examples) to usage[task]."""
    checks = [
        tf.debugging.assert_non_negative(task, message='task_index must be >= 0'),
        tf.debugging.assert_less(task, self.num_tasks, message=f'task_index must be < num_tasks={self.num_tasks}'),
    ]
    with tf.control_dependencies(checks):
      counts = selection_counts(ids, self.pool_size, weights)  # (M,)
      row = tf.one_hot(task, self.num_tasks, dtype=tf.float32)
      self.usage.assign_add(row[:, tf.newaxis] * counts[tf.newaxis, :])

  def total_usage(self):
    """The usage record summed over replicas, (num_tasks, M); callable in replica and cross-replica context."""
    ctx = tf.distribute.get_replica_context()
    value = tf.convert_to_tensor(self.usage)  # Cross-replica: already the sum; replica: this replica's counts.
    if ctx is None:
      return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)

  def _frequency_scores(self, sim, task):
    """Eq. 4 scores (larger is better): -(1 - cos) * h with h the normalised usage of tasks before `task`."""
    earlier = tf.cast(tf.range(self.num_tasks) < task, tf.float32)
    previous = tf.reduce_sum(self.total_usage() * earlier[:, tf.newaxis], axis=0)  # (M,)
    total = tf.reduce_sum(previous)
    h = previous / tf.maximum(total, 1.0)
    penalised = -(1.0 - sim) * h[tf.newaxis, :]
    return tf.where(total > 0, penalised, sim)
