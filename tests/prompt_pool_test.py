"""PromptPool against hand-computed cosine matches, votes, task masks and the Eq. 4 frequency penalty."""

import math

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.models import prompt_pool as prompt_pool_lib
from tests import test_util

R2 = math.sqrt(2.0)

# Keys deliberately not unit length (the pool normalises them): k0 ~ e0, k1 ~ e1, k2 ~ e2, k3 ~ e0+e1, k4 ~ e1+e2.
KEYS = np.array([[2, 0, 0], [0, 3, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32)
# Cosines, by hand:
#   q0 = e0:         k0 1, k3 1/sqrt2                            -> top-2 [0, 3]
#   q1 = e2:         k2 1, k4 1/sqrt2                            -> top-2 [2, 4]
#   q2 = e0+e1:      k3 1, k0 = k1 = 1/sqrt2 (tie -> lower id 0)  -> top-2 [3, 0]
#   q3 = e1+2e2:     k4 3/sqrt10, k2 2/sqrt5, k1 1/sqrt5, ...    -> top-2 [4, 2]
QUERIES = np.array([[5, 0, 0], [0, 0, 2], [1, 1, 0], [0, 1, 2]], np.float32)


def make_pool(*, keys=KEYS, pool_size=5, top_k=2, prompt_length=2, num_tasks=3, **kwargs):
  # 3 tasks x top-2 > 5 prompts: the last task's mask does not fit, which test_task_mask_in_training_only exercises.
  kwargs.setdefault('task_mask_overflow', 'free')
  pool = prompt_pool_lib.PromptPool(embed_dim=keys.shape[1], pool_size=pool_size, prompt_length=prompt_length,
                                    top_k=top_k, num_tasks=num_tasks, **kwargs)
  pool.keys.assign(keys)
  # Prompt i, token j is filled with 100 * i + j so that gathered prompts identify themselves.
  values = 100 * np.arange(pool_size)[:, None, None] + np.arange(prompt_length)[None, :, None]
  pool.prompts.assign(np.broadcast_to(values, pool.prompts.shape).astype(np.float32))
  return pool


def test_instancewise_top_n_and_reduce_sim():
  pool = make_pool(selection='instancewise')
  out = pool(tf.constant(QUERIES))
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[0, 3], [2, 4], [3, 0], [4, 2]])
  expected = (3 * (1 + 1 / R2) + (3 / math.sqrt(10) + 2 / math.sqrt(5))) / 4
  np.testing.assert_allclose(out['reduce_sim'].numpy(), expected, rtol=1e-6)
  assert out['prompt_ids'].dtype == tf.int32
  # Prompts are the selected prompts' tokens, concatenated in selection order: (B, N * Lp, D).
  assert out['prompts'].shape == (4, 4, 3)
  np.testing.assert_array_equal(out['prompts'].numpy()[2, :, 0], [300, 301, 0, 1])


def test_ties_go_to_the_lower_id():
  scores = tf.constant([[1.0, 2.0, 2.0, 0.0, 2.0]])
  np.testing.assert_array_equal(prompt_pool_lib.top_k_ids(scores, 3).numpy(), [[1, 2, 4]])
  # Example q2 has an exact tie between k0 and k1 at 1/sqrt2 for its second slot; id 0 wins.
  pool = make_pool(selection='instancewise')
  np.testing.assert_array_equal(pool(tf.constant(QUERIES[2:3]))['prompt_ids'].numpy(), [[3, 0]])


def test_batchwise_vote_with_tie():
  # Per-example picks {0,3}, {2,4}, {3,0}, {4,2}: ids 0, 2, 3, 4 are each counted twice; the tie goes to 0 and 2.
  pool = make_pool(selection='batchwise')
  out = pool(tf.constant(QUERIES))
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[0, 2]] * 4)
  expected = ((1 + 0) + (0 + 1) + (1 / R2 + 0) + (0 + 2 / math.sqrt(5))) / 4
  np.testing.assert_allclose(out['reduce_sim'].numpy(), expected, rtol=1e-6)


def test_batchwise_vote_majority():
  # Picks {0,3}, {2,4}, {3,0}, {0,3}: 0 and 3 three times each, 2 and 4 once.
  pool = make_pool()
  out = pool(tf.constant(QUERIES[[0, 1, 2, 0]]))
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[0, 3]] * 4)
  # Evaluation can report both rules from the same pool.
  inst = pool(tf.constant(QUERIES[[0, 1, 2, 0]]), selection='instancewise')
  np.testing.assert_array_equal(inst['prompt_ids'].numpy(), [[0, 3], [2, 4], [3, 0], [0, 3]])


def test_task_mask_in_training_only():
  pool = make_pool(selection='instancewise', diversity='task_mask')
  task = tf.Variable(1)
  out = pool(tf.constant(QUERIES), task_index=task, training=True)
  # Task 1 with N = 2 uses prompts [2, 4) whatever the queries.
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[2, 3]] * 4)
  # reduce_sim over keys 2 and 3: q0 0 + 1/sqrt2, q1 1 + 0, q2 0 + 1, q3 2/sqrt5 + 1/sqrt10.
  expected = ((1 / R2) + 1 + 1 + (2 / math.sqrt(5) + 1 / math.sqrt(10))) / 4
  np.testing.assert_allclose(out['reduce_sim'].numpy(), expected, rtol=1e-6)
  # Evaluation matches freely.
  free = pool(tf.constant(QUERIES), task_index=task, training=False)['prompt_ids'].numpy()
  np.testing.assert_array_equal(free, [[0, 3], [2, 4], [3, 0], [4, 2]])
  # Task 2 would need prompts [4, 6) of a pool of 5: free matching in training too.
  task.assign(2)
  late = pool(tf.constant(QUERIES), task_index=task, training=True)['prompt_ids'].numpy()
  np.testing.assert_array_equal(late, [[0, 3], [2, 4], [3, 0], [4, 2]])


def test_task_mask_that_does_not_fit_is_refused_unless_free():
  with pytest.raises(ValueError, match=r'pool_size=5, top_k=2, num_tasks=3 \(6 prompts\).*POOL_SIZE >= 6.*'
                                       r"task_mask_overflow='free'"):
    make_pool(task_mask_overflow='error')
  assert make_pool(task_mask_overflow='error', num_tasks=2).task_mask_overflow == 'error'  # 2 x 2 <= 5 fits.
  make_pool(task_mask_overflow='error', diversity='frequency')  # No mask, nothing to fit.
  with pytest.raises(ValueError, match='Unknown task_mask_overflow'):
    make_pool(task_mask_overflow='wrap')


def test_usage_record():
  pool = make_pool(diversity='none')
  task = tf.Variable(1)
  pool(tf.constant(QUERIES), task_index=task, training=True)  # batchwise [0, 2] for 4 examples
  pool(tf.constant(QUERIES), task_index=task, training=False)  # evaluation: not recorded
  pool(tf.constant(QUERIES), training=True)  # no task index: not recorded
  task.assign(0)
  pool(tf.constant(QUERIES[:1]), task_index=task, training=True, selection='instancewise')  # [0, 3], once
  np.testing.assert_array_equal(pool.usage.numpy(), [[1, 0, 0, 1, 0], [4, 0, 4, 0, 0], [0, 0, 0, 0, 0]])
  assert not pool.usage.trainable
  task.assign(3)
  with pytest.raises(tf.errors.InvalidArgumentError):
    pool(tf.constant(QUERIES), task_index=task, training=True)


def _keys_with_cosines(cosines):
  """Unit keys in 2-D whose cosine with e0 is each of `cosines`."""
  return np.array([[c, math.sqrt(1 - c * c)] for c in cosines], np.float32)


def test_frequency_penalty_follows_eq4():
  # q = e0; cos = [0.9, 0.8, 0.5, 0.0], so the cosine distances gamma = 1 - cos are [0.1, 0.2, 0.5, 1.0].
  pool = make_pool(keys=_keys_with_cosines([0.9, 0.8, 0.5, 0.0]), pool_size=4, top_k=2, num_tasks=3,
                   selection='instancewise', diversity='frequency')
  query = tf.constant([[1.0, 0.0]])
  task = tf.Variable(1)
  # Task 0 selected prompt 0 seven times and 1, 2, 3 once: h = [0.7, 0.1, 0.1, 0.1]. The current task's own row
  # (task 1) must not count.
  pool.usage.assign([[7, 1, 1, 1], [0, 50, 50, 0], [0, 0, 0, 0]])
  # gamma * h = [0.07, 0.02, 0.05, 0.10]: the two smallest are prompts 1 then 2 (plain matching would take 0, 1).
  out = pool(query, task_index=task, training=True)
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[1, 2]])
  np.testing.assert_allclose(out['reduce_sim'].numpy(), 0.8 + 0.5, rtol=1e-6)  # plain cosines of the chosen keys
  # At test time Eq. 3 (plain matching) is used.
  np.testing.assert_array_equal(pool(query, task_index=task)['prompt_ids'].numpy(), [[0, 1]])
  # A prompt never used before has h = 0, so gamma * h = 0 and it is preferred: h = [1/3, 1/3, 0, 1/3] gives
  # [0.033, 0.067, 0, 0.333] -> prompts 2 then 0.
  pool.usage.assign([[5, 5, 0, 5], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(pool(query, task_index=task, training=True)['prompt_ids'].numpy(), [[2, 0]])
  # First task: no earlier usage, plain matching.
  task.assign(0)
  np.testing.assert_array_equal(pool(query, task_index=task, training=True)['prompt_ids'].numpy(), [[0, 1]])


def test_use_key_false_uses_prompt_means_as_keys():
  pool = prompt_pool_lib.PromptPool(embed_dim=3, pool_size=5, prompt_length=2, top_k=1, use_key=False,
                                    selection='instancewise')
  assert pool.keys is None
  assert len(pool.trainable_weights) == 1
  # Prompt i's tokens average to KEYS[i]: tokens KEYS[i] + d and KEYS[i] - d.
  d = np.array([0.3, -0.2, 0.1], np.float32)
  pool.prompts.assign(np.stack([KEYS + d, KEYS - d], axis=1))
  out = pool(tf.constant(QUERIES))
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[0], [2], [3], [4]])
  np.testing.assert_allclose(out['reduce_sim'].numpy(), (1 + 1 + 1 + 3 / math.sqrt(10)) / 4, rtol=1e-6)


@pytest.mark.parametrize('init, low, high', [('uniform', 0.0, 0.01), ('uniform_pm1', -1.0, 1.0), ('zeros', 0, 0)])
def test_initializers(init, low, high):
  pool = prompt_pool_lib.PromptPool(embed_dim=16, pool_size=10, prompt_length=5, prompt_init=init, key_init=init)
  for v in (pool.prompts.numpy(), pool.keys.numpy()):
    assert v.min() >= low and v.max() <= high
    if high > low:
      assert v.max() - v.min() > 0.5 * (high - low)
  normal = prompt_pool_lib.PromptPool(embed_dim=64, pool_size=10, prompt_length=10, prompt_init='normal')
  assert 0.008 < normal.prompts.numpy().std() < 0.012


@pytest.mark.parametrize('kwargs, needle', [
    (dict(selection='foo'), "'foo'"),
    (dict(diversity='bar'), "'bar'"),
    (dict(prompt_init='xavier'), "'xavier'"),
    (dict(key_init='ones'), "'ones'"),
    (dict(top_k=11), 'top_k=11'),
    (dict(pool_size=0), '0'),
])
def test_errors_quote_the_value(kwargs, needle):
  with pytest.raises(ValueError, match=needle):
    prompt_pool_lib.PromptPool(embed_dim=8, **kwargs)
  pool = prompt_pool_lib.PromptPool(embed_dim=3)
  with pytest.raises(ValueError, match="'baz'"):
    pool(tf.constant(QUERIES), selection='baz')


def test_replicas_vote_on_their_own_half_of_the_batch():
  strategy = test_util.mirrored_strategy()
  with strategy.scope():
    pool = make_pool(diversity='none')
    task = tf.Variable(0)
  # Global batch of 8: replica 0 gets four copies of q0 (-> [0, 3]), replica 1 four of q1 (-> [2, 4]). A vote over
  # the whole batch would count 0, 2, 3, 4 four times each and give [0, 2] to everyone.
  batch = np.concatenate([np.tile(QUERIES[0:1], (4, 1)), np.tile(QUERIES[1:2], (4, 1))])
  per_replica = strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.constant(batch[4 * ctx.replica_id_in_sync_group:4 * (ctx.replica_id_in_sync_group + 1)]))

  @tf.function
  def step(queries):
    return strategy.run(lambda q: pool(q, task_index=task, training=True)['prompt_ids'], args=(queries,))

  ids = [t.numpy() for t in strategy.experimental_local_results(step(per_replica))]
  np.testing.assert_array_equal(ids[0], [[0, 3]] * 4)
  np.testing.assert_array_equal(ids[1], [[2, 4]] * 4)
  # Each replica counted its own examples; a cross-replica read sums them.
  task.assign(2)
  step(per_replica)
  np.testing.assert_array_equal(pool.usage.numpy(), [[4, 0, 4, 4, 4], [0] * 5, [4, 0, 4, 4, 4]])
  assert step.experimental_get_tracing_count() == 1


def test_padding_examples_do_not_vote_count_or_pull():
  pool = make_pool(diversity='none')
  queries = tf.constant(QUERIES[[0, 2, 1, 1, 1]])
  # Everyone votes: picks {0,3}, {3,0}, {2,4} x3 -> 2 and 4 win three to two.
  np.testing.assert_array_equal(pool(queries)['prompt_ids'].numpy(), [[2, 4]] * 5)
  # The last three are padding: only {0,3} and {3,0} vote.
  valid = tf.constant([True, True, False, False, False])
  out = pool(queries, task_index=tf.constant(0), training=True, valid=valid)
  np.testing.assert_array_equal(out['prompt_ids'].numpy(), [[0, 3]] * 5)
  # reduce_sim over the real examples only: q0 1 + 1/sqrt2, q2 1/sqrt2 + 1.
  np.testing.assert_allclose(out['reduce_sim'].numpy(), 1 + 1 / R2, rtol=1e-6)
  np.testing.assert_array_equal(pool.usage.numpy()[0], [2, 0, 0, 2, 0])


def test_vote_groups_of_consecutive_examples_by_hand():
  # 2 groups of 3: q0, q0, q1 pick {0,3} {0,3} {2,4} -> [0, 3]; q1, q1, q2 pick {2,4} {2,4} {3,0} -> [2, 4].
  # One vote over all six counts 0, 3 and 2, 4 three times each: the tie gives [0, 2] to everyone.
  queries = tf.constant(QUERIES[[0, 0, 1, 1, 1, 2]])
  whole = make_pool(diversity='none')(queries)['prompt_ids'].numpy()
  np.testing.assert_array_equal(whole, [[0, 2]] * 6)
  grouped = make_pool(diversity='none', vote_size=3)(queries)['prompt_ids'].numpy()
  np.testing.assert_array_equal(grouped, [[0, 3]] * 3 + [[2, 4]] * 3)
  # In training too (the original votes inside each device batch in both).
  trained = make_pool(diversity='none', vote_size=3)(queries, task_index=tf.constant(0), training=True)
  np.testing.assert_array_equal(trained['prompt_ids'].numpy(), [[0, 3]] * 3 + [[2, 4]] * 3)


def test_vote_group_larger_than_the_batch_and_a_short_last_group():
  queries = tf.constant(QUERIES[[0, 0, 1, 1, 1, 2]])
  np.testing.assert_array_equal(make_pool(vote_size=16)(queries)['prompt_ids'].numpy(), [[0, 2]] * 6)
  # Groups of 4: {0,3} {0,3} {2,4} {2,4} -> tie, [0, 2]; the last group of two: {2,4} {2,4} -> [2, 4].
  ids = prompt_pool_lib.batchwise_vote(tf.constant([[0, 3], [0, 3], [2, 4], [2, 4], [2, 4], [2, 4]]), 5, 2,
                                       group_size=4).numpy()
  np.testing.assert_array_equal(ids, [[0, 2]] * 4 + [[2, 4]] * 2)
  # Padding does not vote inside its group.
  ids = prompt_pool_lib.batchwise_vote(tf.constant([[0, 3], [2, 4], [2, 4], [1, 2]]), 5, 2,
                                       weights=tf.constant([1.0, 0.0, 0.0, 1.0]), group_size=2).numpy()
  np.testing.assert_array_equal(ids, [[0, 3]] * 2 + [[1, 2]] * 2)


def test_vote_batch_check_quotes_the_sizes():
  prompt_pool_lib.check_vote_batch(16, 512, 'eval_batch_size=512')  # 32 groups.
  prompt_pool_lib.check_vote_batch(16, 8, 'global_batch_size=16 over 2 replica(s)')  # One smaller group.
  prompt_pool_lib.check_vote_batch(None, 500, 'eval_batch_size=500')
  with pytest.raises(ValueError, match=r'eval_batch_size=500 over 1 replica\(s\) gives 500 .*vote_size=16.*512'):
    prompt_pool_lib.check_vote_batch(16, 500, 'eval_batch_size=500 over 1 replica(s)')
  with pytest.raises(ValueError, match='vote_size'):
    prompt_pool_lib.PromptPool(embed_dim=3, vote_size=0)


def test_shared_prompt_pool_copies_the_previous_tasks_prompts_when_they_fit():
  pool = make_pool(diversity='task_mask', pool_size=5, top_k=2, shared_prompt_pool=True)  # Prompt i = 100 i + j.
  before = pool.prompts.numpy().copy()
  assert not pool.start_task(0)  # Nothing before task 0.
  assert pool.start_task(1)      # Ids [2, 4) <- [0, 2).
  after = pool.prompts.numpy()
  np.testing.assert_array_equal(after[2:4], before[0:2])
  np.testing.assert_array_equal(after[[0, 1, 4]], before[[0, 1, 4]])
  assert not pool.start_task(2)  # Ids [4, 6) do not fit in 5 prompts: the official skips the copy.
  np.testing.assert_array_equal(pool.prompts.numpy(), after)
  plain = make_pool(diversity='task_mask')
  assert not plain.start_task(1)  # Off by default.
