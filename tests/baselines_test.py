"""The baseline overlays (methods/ft_seq_frozen, ft_seq, joint_linear, joint_ft) run through the continual trainer on
the disjoint-classes experiment, with the documented effect on what is trained and on the protocol.

A tiny fake backbone (.npz written by the test) stands in for the shipped ViT-mini, so each run takes seconds.
"""

import glob
import json

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import gin_utils
from l2p_tf.engine import loop
from l2p_tf.engine import preemption
from tests import test_util

EXPERIMENT = 'experiments/cifar100_disjoint_l2p.gin'


def run(tmp_path, method, capsys):
  npz = tmp_path / 'tiny.npz'
  arrays = test_util.write_fake_npz(str(npz), variant='tiny', image_size=32)
  files = [EXPERIMENT, 'local_tiny.gin'] + ([f'methods/{method}.gin'] if method else [])
  gin_utils.parse(files, [f'INIT_CHECKPOINT = "{npz}"'])
  model_dir = tmp_path / (method or 'l2p')
  try:
    with tfds.testing.mock_data(num_examples=1000):
      res = gin.get_configurable(loop.run)(model_dir=str(model_dir),
                                                strategy=tf.distribute.OneDeviceStrategy('/cpu:0'),
                                                data_dir=str(tmp_path / 'tfds'))
  finally:
    gin.clear_config()
  out = capsys.readouterr().out
  ckpt = sorted(glob.glob(str(model_dir / 'checkpoints' / 'ckpt-*.index')))[-1][:-len('.index')]
  reader = tf.train.load_checkpoint(ckpt)
  key = [k for k in reader.get_variable_to_shape_map() if k.startswith('model/vit/embedding/kernel')][0]
  backbone_changed = not np.array_equal(reader.get_tensor(key), arrays['embedding/kernel'])
  return res, out, backbone_changed, json.loads((model_dir / 'results.json').read_text())


@pytest.mark.parametrize('method,summary,trains_backbone', [
    (None, 'L2P: trainable', False),
    ('ft_seq_frozen', 'Linear probe: trainable', False),
    ('ft_seq', 'Fine-tuning: trainable', True),
])
def test_sequential_methods(tmp_path, capsys, method, summary, trains_backbone):
  res, out, changed, on_disk = run(tmp_path, method, capsys)
  assert summary in out
  assert changed == trains_backbone
  assert res['benchmark'] == 'split_cifar100[0-49]' and res['num_tasks'] == res['tasks_done'] == 2
  assert np.array(on_disk['accuracy_matrix'], dtype=float).shape == (2, 2)
  assert ('prompt_usage_train' in res) == (method is None)


@pytest.mark.parametrize('method,trains_backbone', [('joint_linear', False), ('joint_ft', True)])
def test_joint_methods(tmp_path, capsys, method, trains_backbone):
  res, out, changed, on_disk = run(tmp_path, method, capsys)
  assert changed == trains_backbone
  assert res['scenario'] == 'joint' and res['complete']
  assert [t['name'] for t in res['tasks']] == ['joint']
  assert len(res['tasks'][0]['classes']) == 20  # local_tiny keeps 2 of the 5 tasks.
  row = np.array(on_disk['accuracy_matrix'], dtype=float)
  assert row.shape == (1, 2) and not np.isnan(row).any()
  assert res['final']['avg_acc'] == pytest.approx(row.mean(), abs=1e-3)
  assert res['final']['forgetting'] == 0.0
  assert 'joint training, accuracy per task: task_0' in out
