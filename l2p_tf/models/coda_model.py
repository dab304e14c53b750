"""CODA-Prompt (Smith et al., CVPR 2023): per-layer prompt components weighted by an attended query, by prefix tuning.

Follows GT-RIPL/CODA-Prompt (`models/zoo.py`, `CodaPrompt`). At each prompted layer l (official: 0-4):

    components P_l (M, L, D), keys K_l (M, D), attention vectors A_l (M, D)
    alpha[b, m] = < n(q_b * A_m), n(K_m) >          n(x) = x / max(|x|, 1e-12); a cosine, no softmax, may be < 0
    prompt_b    = sum_m alpha[b, m] P_m              (B, L, D)
    prefix      = keys prompt_b[:, :L/2], values prompt_b[:, L/2:]   (per sample, in the projected space)
    logits      = head(final-LayerNorm [CLS] of the prompted pass)

with q the final-LayerNorm [CLS] of the frozen, prompt-free pass. Task t owns rows [s, f) = [t pt, (t+1) pt), pt =
M // num_tasks. Rows [0, s) are the earlier tasks' and are frozen, rows [s, f) train, rows >= f are zero (unused).
Frozen here means the rows a pass reads come from `committed` copies (non-trainable variables written only by
`start_task`), so no optimizer state (Adam moments, momentum) can move them, whatever the optimizer settings.

`start_task(t)` (the official `process_task_count` + `gram_schmidt`): commits the rows of the task just finished,
keeps rows [0, s), draws rows [s, f) from a standard normal, removes from each its projections on every earlier row
(classical Gram-Schmidt on the raw draw, P flattened to (M, L D)), unit-normalises them and zeroes rows >= f.

Orthogonality penalty (used when its coefficient > 0; the released runs use 0): per layer
O(K) + O(A) + O(P.reshape(f, -1)) with O(t) = mean over the f x f Gram matrix of rows [0, f) of (t t^T - I)^2,
summed over layers. (An older version of the original also scaled each O by 1e-6.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from l2p_tf.models import vit as vit_lib

PARTS = ('components', 'keys', 'attention')


def normalize(x, axis=-1):
  """x / max(|x|, 1e-12) along `axis` (torch's F.normalize); a zero row stays zero."""
  return tf.math.l2_normalize(x, axis=axis, epsilon=1e-24)


def gram_schmidt_rows(rows: np.ndarray, start: int, stop: int, rng: np.random.Generator) -> np.ndarray:
  """Keeps rows [0, start), fills [start, stop) with orthogonalised unit normal draws, zeroes rows >= stop.

  Args:
    rows: (M, n) float array.
    start, stop: the new rows [start, stop).
    rng: source of the draws.

  Returns:
    (M, n) float32: row k in [start, stop) is a standard normal draw u minus the projections of u on every row j < k
    (the earlier rows as given, the new rows before normalisation), then normalised to unit length.
  """
  out = np.zeros(rows.shape, np.float64)
  out[:start] = rows[:start]
  for k in range(start, stop):
    u = rng.standard_normal(rows.shape[1])
    v = u.copy()
    for j in range(k):
      denom = out[j] @ out[j]
      if denom > 1e-8:
        v -= (out[j] @ u) / denom * out[j]
    out[k] = v
  out[start:stop] /= np.linalg.norm(out[start:stop], axis=1, keepdims=True)
  return out.astype(np.float32)


def ortho_penalty(t, rows_used):
  """mean over the f x f block of (t t^T - I)^2, f = rows_used; t: (M, n) with rows >= f zero."""
  m = tf.shape(t)[0]
  used = tf.cast(tf.range(m) < rows_used, t.dtype)
  gram = tf.matmul(t, t, transpose_b=True) - tf.linalg.diag(used)
  f = tf.cast(rows_used, t.dtype)
  return tf.reduce_sum(tf.square(gram)) / tf.maximum(f * f, 1.0)


class CodaPromptModel(tf_keras.Model):
  """ViT + per-layer CODA prompt components + zero-initialised head on the prompted [CLS].

  Variables (per prompted layer i): `components_i` (M, L, D), `keys_i` (M, D), `attention_i` (M, D) trainable; their
  `committed_*_i` copies (rows of finished tasks, non-trainable); `task` (int32, the current task).

  Args:
    vit: a `vit_lib.VisionTransformer` (frozen here).
    num_classes: width of the head.
    num_tasks: T; each task owns M // T components.
    num_components: M (official 100).
    prompt_length: L (official 8: 4 key + 4 value tokens); must be even.
    layers: prompted layers (official (0, 1, 2, 3, 4)).
    seed: seed of the per-task Gram-Schmidt draws (each task and layer draws from its own generator).
    name: model name.

  Raises:
    ValueError: a layer outside the ViT, an odd length, fewer components than tasks.
  """

  def __init__(self, *, vit: vit_lib.VisionTransformer, num_classes: int, num_tasks: int,
               num_components: int = 100, prompt_length: int = 8, layers: Sequence[int] = (0, 1, 2, 3, 4),
               seed: int = 0, name: str = 'coda_prompt'):
    super().__init__(name=name)
    self.prompt_layers = tuple(int(i) for i in layers)
    depth = vit.config.num_layers
    if not self.prompt_layers or any(not 0 <= i < depth for i in self.prompt_layers):
      raise ValueError(f'layers={self.prompt_layers} must be non-empty layers of ViT-{vit.variant} (0..{depth - 1}).')
    if prompt_length < 2 or prompt_length % 2:
      raise ValueError(f'prompt_length={prompt_length} must be even (half keys, half values).')
    if num_components < num_tasks:
      raise ValueError(f'num_components={num_components} gives no component to each of {num_tasks} tasks.')
    self.vit = vit
    self.vit.trainable = False
    self.num_classes, self.num_tasks = num_classes, num_tasks
    self.num_components, self.prompt_length = num_components, prompt_length
    self.per_task = num_components // num_tasks
    self.seed = seed
    d = vit.hidden_size
    shapes = {'components': (num_components, prompt_length, d), 'keys': (num_components, d),
              'attention': (num_components, d)}
    self.trained, self.committed = [], []
    for i, _ in enumerate(self.prompt_layers):
      self.trained.append({p: self.add_weight(name=f'{p}_{i}', shape=s, dtype=tf.float32, initializer='zeros',
                                              trainable=True) for p, s in shapes.items()})
      self.committed.append({p: self.add_weight(name=f'committed_{p}_{i}', shape=s, dtype=tf.float32,
                                                initializer='zeros', trainable=False) for p, s in shapes.items()})
    self.task = self.add_weight(name='task', shape=(), dtype=tf.int32, initializer='zeros', trainable=False)
    self.head = tf_keras.layers.Dense(num_classes, kernel_initializer='zeros', bias_initializer='zeros',
                                      dtype='float32', name='head')
    self.head.build((None, d))
    self.start_task(0)

  def _rows(self, task):
    """(s, f) of `task` as int32 tensors."""
    task = tf.cast(task, tf.int32)
    return task * self.per_task, (task + 1) * self.per_task

  def effective(self, i: int, task=None) -> dict:
    """Layer i's components as a pass reads them: committed rows [0, s), trained rows [s, f), zero beyond."""
    s, f = self._rows(self.task if task is None else task)
    rows = tf.range(self.num_components)
    out = {}
    for p in PARTS:
      trained, committed = tf.convert_to_tensor(self.trained[i][p]), tf.convert_to_tensor(self.committed[i][p])
      shape = [-1] + [1] * (trained.shape.rank - 1)
      old = tf.reshape(rows < s, shape)
      current = tf.reshape((rows >= s) & (rows < f), shape)
      out[p] = tf.where(old, committed, tf.where(current, trained, tf.zeros_like(trained)))
    return out

  def start_task(self, task: int) -> None:
    """Commits the finished task's rows and re-initialises task `task`'s rows by Gram-Schmidt (see the module)."""
    task = int(task)
    s, f = task * self.per_task, (task + 1) * self.per_task
    finished = int(self.task.numpy()) * self.per_task  # rows [0, finished) are already committed
    for i in range(len(self.prompt_layers)):
      for j, p in enumerate(PARTS):
        trained, committed = self.trained[i][p].numpy(), self.committed[i][p].numpy()
        rows = np.where(np.arange(self.num_components).reshape([-1] + [1] * (trained.ndim - 1)) < finished,
                        committed, trained)
        rng = np.random.default_rng([self.seed, task, i, j])
        new = gram_schmidt_rows(rows.reshape(self.num_components, -1), s, f, rng).reshape(trained.shape)
        self.trained[i][p].assign(new)
        kept = new.copy()
        kept[s:] = 0.0
        self.committed[i][p].assign(kept)
    self.task.assign(task)

  def query_pass(self, images) -> dict:
    """The frozen, prompt-free pass: {'tokens': embedded (B, 1 + P, D), 'query': final-LayerNorm [CLS] (B, D)}."""
    x = self.vit.embed(tf.cast(images, self.compute_dtype))
    query = tf.cast(self.vit.encode(x, training=False)[:, 0], tf.float32)
    return {'tokens': tf.stop_gradient(x), 'query': tf.stop_gradient(query)}

  def prefixes(self, query) -> dict:
    """{layer: (key prefix, value prefix)}, each (B, L/2, D), from the query (B, D)."""
    out = {}
    half = self.prompt_length // 2
    for i, layer in enumerate(self.prompt_layers):
      e = self.effective(i)
      attended = normalize(query[:, tf.newaxis, :] * e['attention'][tf.newaxis])  # (B, M, D)
      alpha = tf.einsum('bmd,md->bm', attended, normalize(e['keys']))
      prompt = tf.einsum('bm,mld->bld', alpha, e['components'])
      out[layer] = (prompt[:, :half], prompt[:, half:])
    return out

  def ortho_loss(self):
    """Sum over layers of O(K) + O(A) + O(P flattened) on rows [0, f) of the current task."""
    _, f = self._rows(self.task)
    total = tf.constant(0.0, tf.float32)
    for i in range(len(self.prompt_layers)):
      e = self.effective(i)
      total += ortho_penalty(e['keys'], f) + ortho_penalty(e['attention'], f)
      total += ortho_penalty(tf.reshape(e['components'], [self.num_components, -1]), f)
    return total

  def call(self, images, *, training=False, query_pass=None) -> dict:
    """{'logits': (B, num_classes) float32, 'query': (B, D)}; `query_pass` as `L2PModel.call`'s."""
    if query_pass is None:
      query_pass = self.query_pass(images)
    x = query_pass['tokens'] if 'tokens' in query_pass else self.vit.embed(images, training=training)
    encoded = self.vit.encode(x, training=training, prefixes=self.prefixes(query_pass['query']))
    return {'logits': self.head(tf.cast(encoded[:, 0], tf.float32)), 'query': query_pass['query']}

  def param_counts(self) -> dict[str, int]:
    """'prompts' (components, keys and attention vectors of every layer), 'head', 'backbone', 'trainable'."""
    prompts = vit_lib.count_params([v for layer in self.trained for v in layer.values()])
    counts = {'prompts': prompts, 'head': vit_lib.count_params(self.head.weights),
              'backbone': vit_lib.count_params(self.vit.weights),
              'trainable': vit_lib.count_params(self.trainable_variables)}
    counts['total'] = counts['prompts'] + counts['head'] + counts['backbone']
    return counts

  def summary_line(self) -> str:
    c = self.param_counts()
    return (f'CODA-Prompt: trainable {c["trainable"]:,} (components, keys and attention {c["prompts"]:,}, head '
            f'{c["head"]:,}; {self.per_task} components per task) of {c["total"]:,} total')
