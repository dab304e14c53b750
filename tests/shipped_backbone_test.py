"""The backbone shipped in pretrained/: its checksum, a strict load, and its documented test accuracy."""

import hashlib
import json
import os

import pytest
import tensorflow as tf

from l2p_tf.checkpoints import npz_loader
from l2p_tf.checkpoints import npz_writer
from l2p_tf.data import pretraining
from l2p_tf.engine import evaluator as evaluator_lib
from l2p_tf.methods import supervised
from l2p_tf.models import vit as vit_lib
from tests import test_util

DIR = os.path.join(test_util.REPO_ROOT, 'pretrained')
META = json.load(open(os.path.join(DIR, 'vit_mini_cifar100_50-99.json')))
NPZ = os.path.join(DIR, META['file'])


def test_checksum_and_strict_load():
  with open(NPZ, 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == META['sha256']
  assert META['sha256'] in open(os.path.join(DIR, 'README.md')).read()
  model = vit_lib.VisionTransformer(variant='mini', image_size=32)
  report = npz_loader.load_vit_npz(model, NPZ, strict=True)
  assert len(report.loaded) == len(model.npz_variables()) and sorted(report.skipped) == ['head/bias', 'head/kernel']
  assert npz_loader.detect_variant(npz_loader.read_npz(NPZ)) == 'mini'


def test_documented_accuracy_on_classes_50_to_99(shared_data_dirs):
  data_dir, manual_dir = shared_data_dirs
  bench = pretraining.pretraining(dataset='cifar100', classes=META['classes'], epochs=1, image_size=32,
                                  data_dir=data_dir, manual_dir=manual_dir)
  assert bench.num_eval_examples(0) == META['test_images'] == 5000
  method = supervised.Supervised()
  method.build(backbone=lambda **kw: vit_lib.VisionTransformer(variant='mini', image_size=32, **kw),
               num_classes=META['num_classes'], num_tasks=1)
  npz_writer.load_classifier_npz(method.model, NPZ)
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  ds = strategy.distribute_datasets_from_function(lambda ctx: bench.eval_dataset(0, ctx, global_batch_size=500))
  accuracy = evaluator_lib.Evaluator(strategy=strategy, method=method).evaluate(ds)['batchwise']['accuracy']
  assert accuracy == pytest.approx(META['roundtrip_test_accuracy'], abs=0.005)
  assert abs(META['test_accuracy'] - META['roundtrip_test_accuracy']) <= 0.1
