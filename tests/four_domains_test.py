"""The four-domain protocol (CIFAR-100 classes 0-9, MNIST, notMNIST, Fashion-MNIST) on the real local files:
the benchmark's tasks and notMNIST's seeded 80/20 split, and a local_tiny run of L2P end to end."""

import os

import numpy as np
import pytest

from l2p_tf.data import benchmarks
from tests import test_util
from tests.runs import run_experiment

FASHION = '/usr/share/datasets/fashion-mnist'
pytestmark = pytest.mark.skipif(
    not (os.path.isdir(os.path.join(test_util.SHARED_DATA, 'notmnist')) and os.path.isdir(FASHION)),
    reason='needs ../shared/data (CIFAR-100, MNIST, notMNIST) and the Debian Fashion-MNIST files')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_tasks_classes_and_the_seeded_notmnist_split(data_dir):
  bench = benchmarks.four_domains(data_dir=data_dir, manual_dir=test_util.SHARED_DATA)
  assert [t.name for t in bench.tasks] == ['cifar100_0-9', 'mnist', 'not_mnist', 'fashion_mnist']
  assert [t.classes for t in bench.tasks] == [tuple(range(10 * t, 10 * t + 10)) for t in range(4)]
  assert bench.class_names[0] == 'cifar100_0-9/apple' and bench.class_names[29] == 'not_mnist/J'
  train, test = bench.train_part(2), bench._eval_part(2)  # pylint: disable=protected-access
  assert (len(train.indices), len(test.indices)) == (8000, 2000)
  assert not set(train.indices) & set(test.indices)
  labels = np.asarray(test.labels)[test.indices]
  assert labels.min() == 20 and labels.max() == 29  # notMNIST is task 2: labels offset by 20.
  # Fixed seed: the same split again; another seed gives another one.
  again = benchmarks.sample_split_part(_data(data_dir), 'not_mnist', 1,
                                       offset=20, test_fraction=0.2, split_seed=0)
  np.testing.assert_array_equal(again.indices, test.indices)
  other = benchmarks.sample_split_part(_data(data_dir), 'not_mnist', 1, offset=20, test_fraction=0.2, split_seed=1)
  assert set(other.indices) != set(test.indices)
  assert bench.num_train_examples(0) == 5000 and bench.num_eval_examples(0) == 1000  # CIFAR-100 classes 0-9.
  with pytest.raises(ValueError, match='1.5'):
    benchmarks.four_domains(notmnist_test_fraction=1.5)


def test_joint_upper_bound_trains_on_every_domain_at_one_geometry(data_dir):
  limits = benchmarks.Limits(max_train_examples_per_task=300, max_eval_examples_per_task=50)
  joint = benchmarks.four_domains(joint=True, limits=limits, data_dir=data_dir, manual_dir=test_util.SHARED_DATA)
  tasks = benchmarks.four_domains(limits=limits, data_dir=data_dir, manual_dir=test_util.SHARED_DATA)
  assert [t.classes for t in joint.tasks] == [tuple(range(40))]
  assert joint.eval_names == tasks.eval_names
  part = joint.train_part(0)
  assert part.images.shape == (1200, 32, 32, 3)
  labels = np.asarray(part.labels)[part.indices]
  # Each domain's capped training rows, in task order, exactly as the sequential run trains them.
  expected = np.concatenate([np.asarray(tasks.train_part(t).labels)[tasks.train_part(t).indices] for t in range(4)])
  np.testing.assert_array_equal(labels, expected)


def _data(data_dir):
  from l2p_tf.data import sources  # pylint: disable=g-import-not-at-top
  return sources.Data(data_dir, test_util.SHARED_DATA)


def test_local_tiny_l2p_reports_every_protocol_on_all_four_domains(tmp_path, data_dir):
  res = run_experiment(tmp_path / 'run', 'four_domains_l2p', ['benchmarks.Limits.max_tasks = 4'],
                       data_dir=data_dir, manual_dir=test_util.SHARED_DATA)
  assert res['complete'] and res['eval_names'] == ['cifar100_0-9', 'mnist', 'not_mnist', 'fashion_mnist']
  assert res['primary_protocol'] == 'official'
  for name, p in res['protocols'].items():
    assert len(p['accuracy_matrix']) == 4 and None not in p['accuracy_matrix'][3], name
    assert p['count_matrix'][3] == [64.0] * 4  # local_tiny's 64 test images per task, each counted once.
    assert p['final']['task_id_acc'] is not None
  assert res['final']['avg_acc'] == res['protocols']['official']['final']['avg_acc']
