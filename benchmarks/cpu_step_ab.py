r"""The quickstart-size training step, today's default against the previous one, in one process: prints a table.

    .venv/bin/python benchmarks/cpu_step_ab.py --rounds=20          # ViT-mini, 32 px, batch 64, float32, CPU

Rows (each its own model, optimizer and trainer, built as the runs build them: benchmarks/step_profile.py):

  * `einsum attention, XLA off`: the previous default (the ViT's attention as einsums, as it was computed before
    `vit.MultiHeadDotProductAttention` moved to matmuls; `jit_compile` False);
  * `matmul attention, XLA off`;
  * `matmul attention, XLA on`;
  * `default ('auto')`: whatever `config.Training.jit_compile = 'auto'` resolves to on this machine;
  * with `--device_loop=n` (n > 1), the default again with n steps per device loop
    (`config.Cadence.steps_per_device_loop`; its 'auto' is 1 on CPU), timed per step.

After warm-up, timed rounds interleave one step of every row, so a machine shared with other jobs loads every row
alike; medians of wall-clock and of the process's CPU seconds (`time.process_time`, all threads) per step are
reported, with the load average before and after.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_profile  # pylint: disable=g-import-not-at-top

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

_ROUNDS = flags.DEFINE_integer('rounds', 20, 'Timed rounds (one step of every row each).')
_DEVICE_LOOP = flags.DEFINE_integer('device_loop', 0, 'Also time device loops of this many steps (0: no).')


def einsum_attention_call(self, x, training=False, prefix=None):
  """The attention as it was computed before (einsums; same variables, same values). L2P's prompts are tokens, not
  prefixes, so the `prefix` argument the encoder blocks pass is always None here."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assert prefix is None, 'the einsum reference has no prefix attention'
  q = self.query(x) * tf.cast(1.0 / math.sqrt(self.head_dim), x.dtype)
  k = self.key(x)
  v = self.value(x)
  scores = tf.einsum('bqhk,bthk->bhqt', q, k)
  weights = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), x.dtype)
  weights = self.dropout(weights, training=training)
  return self.out(tf.einsum('bhqt,bthk->bqhk', weights, v))


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from l2p_tf.models import vit  # pylint: disable=g-import-not-at-top

  rows = {}
  matmul_call = vit.MultiHeadDotProductAttention.call

  def add(name, jit, attention_call, n=1):
    vit.MultiHeadDotProductAttention.call = attention_call
    try:
      trainer = step_profile.build_trainer(jit, steps_per_loop=n)

      def step():
        float(trainer.train(tf.constant(n, tf.int32))['loss'])

      step()  # Traces (with this row's attention) and compiles.
      step()
    finally:
      vit.MultiHeadDotProductAttention.call = matmul_call
    rows[name] = (step, trainer.jit_compile, [], [], n)

  add('einsum attention, XLA off (previous default)', False, einsum_attention_call)
  add('matmul attention, XLA off', False, matmul_call)
  add('matmul attention, XLA on', True, matmul_call)
  add("default ('auto')", 'auto', matmul_call)
  if _DEVICE_LOOP.value > 1:
    add(f"default ('auto'), device loops of {_DEVICE_LOOP.value} steps", 'auto', matmul_call, _DEVICE_LOOP.value)
  load_before = os.getloadavg()
  for _ in range(_ROUNDS.value):
    for step, _, walls, cpus, n in rows.values():
      w, c = time.perf_counter(), time.process_time()
      step()
      walls.append((time.perf_counter() - w) / n)
      cpus.append((time.process_time() - c) / n)
  load_after = os.getloadavg()
  base_wall = statistics.median(next(iter(rows.values()))[2])
  base_cpu = statistics.median(next(iter(rows.values()))[3])
  print(f'\nViT-mini, 32 px, batch {step_profile._BATCH.value}, float32, one CPU replica; {_ROUNDS.value} interleaved '  # pylint: disable=protected-access
        f'rounds; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}\n')
  print('| row | XLA | step ms (median) | step CPU-s (median) | speed-up, wall | speed-up, CPU-s |')
  print('|---|---|---|---|---|---|')
  for name, (_, jit, walls, cpus, _) in rows.items():
    w, c = statistics.median(walls), statistics.median(cpus)
    print(f'| {name} | {"on" if jit else "off"} | {1000 * w:.0f} | {c:.3f} | {base_wall / w:.2f}x | '
          f'{base_cpu / c:.2f}x |')


if __name__ == '__main__':
  app.run(main)
