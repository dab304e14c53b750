r"""Times loading an original-layout ViT `.npz` into the model (target: under 10 s for ViT-B/16 on 2 CPU cores).

  .venv/bin/python benchmarks/npz_load_benchmark.py [--variant=B/16] [--repeats=3]

Writes a random file with the original key names and shapes into a temporary directory, then times
`load_vit_npz` (read + checks + assignment) and, separately, the model construction it does not include.
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import l2p_tf  # pylint: disable=g-import-not-at-top,unused-import
from l2p_tf.checkpoints import npz_loader  # pylint: disable=g-import-not-at-top
from l2p_tf.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
from tests import test_util  # pylint: disable=g-import-not-at-top

_VARIANT = flags.DEFINE_string('variant', 'B/16', 'ViT variant.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed loads.')


def main(_):
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'vit.npz')
    test_util.write_fake_npz(path, variant=_VARIANT.value, image_size=224, representation_size=768,
                             num_classes=21843)
    size_mb = os.path.getsize(path) / 2 ** 20
    t = time.perf_counter()
    model = vit_lib.VisionTransformer(variant=_VARIANT.value, image_size=224)
    build_s = time.perf_counter() - t
    times = []
    for _ in range(_REPEATS.value):
      t = time.perf_counter()
      npz_loader.load_vit_npz(model, path)
      times.append(time.perf_counter() - t)
  print(f'| variant | file MB | build model s | load s (median of {len(times)}) | load s (max) |')
  print('|---|---|---|---|---|')
  print(f'| {_VARIANT.value} | {size_mb:.0f} | {build_s:.2f} | {sorted(times)[len(times) // 2]:.2f} | '
        f'{max(times):.2f} |')


if __name__ == '__main__':
  app.run(main)
