"""The backbone shipped in pretrained/: its checksum, a strict load, and its documented test accuracy."""

import hashlib
import json
import os

import pytest
import tensorflow as tf

from l2p_tf import pretrain
from l2p_tf.checkpoints import npz_loader
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
  images, labels, _ = pretrain._load_split('cifar100', 'test', META['classes'],  # pylint: disable=protected-access
                                            data_dir=data_dir, manual_dir=manual_dir)
  assert len(labels) == META['test_images'] == 5000
  model = vit_lib.VisionTransformer(variant='mini', image_size=32, num_classes=META['num_classes'])
  pretrain.load_classifier_npz(model, NPZ)
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  ds = pretrain.eval_dataset(images, labels, None, global_batch_size=500, image_size=32)
  accuracy = pretrain.make_evaluator(strategy, model)(ds)
  assert accuracy == pytest.approx(META['roundtrip_test_accuracy'], abs=0.005)
  assert abs(META['test_accuracy'] - META['roundtrip_test_accuracy']) <= 0.1
