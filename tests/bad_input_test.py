"""Every bad input of docs/errors.md: one clear `error:` line naming the culprit and the fix, exit code 2, and the
model_dir exactly as it was (here: a directory holding a user's file, or a finished run, or nothing at all).

The command line runs in this process (`l2p_tf.main.main` with parsed flags), on `tfds.testing.mock_data` where data
is needed; the table in docs/errors.md quotes these messages.
"""

import gzip
import json
import os
import shutil
import struct
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf.data import sources
from tests import test_util
from tests.runs import run_experiment
from tests.runs import run_main
from tests.runs import snapshot

TINY = ['--gin_file=experiments/cifar100_l2p.gin', '--gin_file=local_tiny.gin']
ONLY_MNIST = "--gin_bindings=benchmarks.five_datasets.datasets = ('mnist',)"


@pytest.fixture
def model_dir(tmp_path):
  """A model_dir that already holds something of the user's: it must come out unchanged."""
  d = tmp_path / 'run'
  d.mkdir()
  (d / 'notes.txt').write_text('my notes\n')
  return d


def assert_one_error(code, err, *needles):
  assert code == 2, err
  lines = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, err
  assert 'Traceback' not in err and 'In call to configurable' not in err
  for needle in needles:
    assert needle in err, f'{needle!r} not in:\n{err}'


def mock(num_examples=1000, as_dataset_fn=None):
  return tfds.testing.mock_data(num_examples=num_examples, as_dataset_fn=as_dataset_fn)


def labelled_data(labels_for):
  """A mock `as_dataset` whose examples carry `labels_for(builder_name, split)` (images of the builder's shape)."""
  def as_dataset(self, split, *args, **kwargs):
    del args, kwargs
    labels = np.asarray(labels_for(self.name, str(split)), np.int64)
    shape = self.info.features['image'].shape
    images = np.zeros((len(labels), *shape), np.uint8)
    return tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
  return as_dataset


def test_missing_npz(capsys, model_dir):
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY,
                                f'--gin_bindings=INIT_CHECKPOINT = "{model_dir}/ViT-B_16.npz"'])
  assert_one_error(code, err, f'error: Checkpoint file {model_dir}/ViT-B_16.npz does not exist',
                   'Set INIT_CHECKPOINT to the path of an original ViT .npz')
  assert snapshot(model_dir) == before


def test_npz_of_another_variant_lists_the_keys(capsys, model_dir, tmp_path):
  npz = tmp_path / 'ViT-S_16.npz'
  test_util.write_fake_npz(str(npz), variant='S/16', image_size=32)
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--gin_bindings=INIT_CHECKPOINT = "{npz}"',
                                "--gin_bindings=vit.VisionTransformer.variant = 'B/16'"])
  assert_one_error(code, err, f'error: Checkpoint {npz} does not fit the model:\nThe file looks like ViT-S/16',
                   '198 mis-shaped key(s):',
                   'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel: file (384, 1536) vs model (768, 3072)',
                   'but the model is ViT-B/16: point INIT_CHECKPOINT at a ViT-B/16 file or set the model variant '
                   "to 'S/16'")
  assert snapshot(model_dir) == before


def test_npz_with_missing_and_extra_keys(capsys, model_dir, tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)
  arrays.pop('Transformer/encoder_norm/scale')
  arrays['Transformer/encoderblock_9/LayerNorm_0/scale'] = np.ones(64, np.float32)
  npz = tmp_path / 'edited.npz'
  np.savez(npz, **arrays)
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--gin_bindings=INIT_CHECKPOINT = "{npz}"'])
  assert_one_error(code, err, '1 missing key(s)', 'Transformer/encoder_norm/scale', '1 unexpected key(s)',
                   'Transformer/encoderblock_9/LayerNorm_0/scale')
  assert snapshot(model_dir) == before


def test_file_that_is_not_an_npz(capsys, model_dir, tmp_path):
  bogus = tmp_path / 'ViT-B_16.npz'
  bogus.write_text('<html>403 Forbidden</html>\n')
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--gin_bindings=INIT_CHECKPOINT = "{bogus}"'])
  assert_one_error(code, err, f"error: Checkpoint file {bogus} is not an .npz archive (not a zip file; it starts with "
                   "b'<html>403 Forbidden</html>",
                   're-download it or check the path')
  assert snapshot(model_dir) == before


def test_unknown_gin_binding(capsys, model_dir):
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY,
                                '--gin_bindings=prompt_pool.PromptPool.top_kk = 3'])
  assert_one_error(code, err, "Gin binding 'prompt_pool.PromptPool.top_kk = 3'",
                   "doesn't have a parameter named 'top_kk'")
  assert snapshot(model_dir) == before


def test_typo_in_a_gin_file_names_file_and_line(capsys, model_dir, tmp_path):
  bad = tmp_path / 'mine.gin'
  bad.write_text("include 'experiments/cifar100_l2p.gin'\n\nprompt_pool.PromptPool:\n  top_k = 4\n  pool_szie = 10\n")
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', f'--gin_file={bad}'])
  assert_one_error(code, err, f'Gin file {bad}', 'line 5', 'pool_szie')
  assert snapshot(model_dir) == before


def test_unknown_dataset_name(capsys, tmp_path):
  fresh = tmp_path / 'never_created'
  code, err, out = run_main(capsys, [f'--model_dir={fresh}', '--gin_file=experiments/five_datasets_l2p.gin',
                                '--gin_file=local_tiny.gin',
                                "--gin_bindings=benchmarks.five_datasets.datasets = ('cifar10', 'mnistt')"])
  assert_one_error(code, err, "unknown dataset 'mnistt'", "known: ['cifar10', 'mnist', 'svhn_cropped'")
  assert not fresh.exists()


def test_data_not_prepared_and_no_network_fails_fast(capsys, model_dir, tmp_path, monkeypatch):
  # No network, whatever this machine has: every HTTP(S) request goes to a proxy that refuses connections.
  for var in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy'):
    monkeypatch.setenv(var, 'http://127.0.0.1:9')
  for var in ('NO_PROXY', 'no_proxy'):
    monkeypatch.delenv(var, raising=False)
  before = snapshot(model_dir)
  start = time.perf_counter()
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={tmp_path / "empty_tfds"}'])
  assert time.perf_counter() - start < 60  # tfds alone retries for minutes.
  assert_one_error(code, err, "dataset 'cifar100' is not prepared in", 'cannot be reached (no network?)',
                   'place train, test, meta in <manual_dir>/cifar-100-python/ and pass --tfds_manual_dir=')
  assert snapshot(model_dir) == before


def _write_idx(path, array):
  with gzip.open(path, 'wb') as f:
    f.write(struct.pack('>HBB', 0, 8, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape))
    f.write(array.astype(np.uint8).tobytes())


def test_corrupt_tfrecord(capsys, model_dir, tmp_path):
  manual, data_dir = tmp_path / 'manual', tmp_path / 'tfds'
  (manual / 'mnist').mkdir(parents=True)
  rng = np.random.default_rng(0)
  for prefix, n in (('train', 64), ('t10k', 32)):
    _write_idx(manual / 'mnist' / f'{prefix}-images-idx3-ubyte.gz', rng.integers(0, 255, (n, 28, 28)))
    _write_idx(manual / 'mnist' / f'{prefix}-labels-idx1-ubyte.gz', np.arange(n) % 10)
  builder = sources.get_builder('mnist', data_dir=str(data_dir), manual_dir=str(manual))
  record = tf.io.gfile.glob(os.path.join(builder.data_dir, '*train.tfrecord*'))[0]
  raw = bytearray(open(record, 'rb').read())
  raw[len(raw) // 2:len(raw) // 2 + 64] = b'\xff' * 64
  open(record, 'wb').write(bytes(raw))
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', '--gin_file=experiments/five_datasets_l2p.gin',
                                '--gin_file=local_tiny.gin', ONLY_MNIST,
                                f'--tfds_data_dir={data_dir}', f'--tfds_manual_dir={manual}'])
  assert_one_error(code, err, f"error: dataset 'mnist_local' in {builder.data_dir} is corrupt: reading split 'train' "
                   'failed (DataLossError: corrupted record at ', f'). Delete {builder.data_dir} and rerun to prepare')
  assert snapshot(model_dir) == before


def test_task_mask_larger_than_the_pool(capsys, model_dir):
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, '--gin_bindings=TOP_K = 6',
                                "--gin_bindings=prompt_pool.PromptPool.diversity = 'task_mask'",
                                "--gin_bindings=prompt_pool.PromptPool.task_mask_overflow = 'error'"])
  assert_one_error(code, err, 'pool_size=10, top_k=6, num_tasks=2 (12 prompts)', 'Use POOL_SIZE >= 12',
                   "diversity='frequency' or 'none'", "task_mask_overflow='free'")
  assert snapshot(model_dir) == before


def test_global_batch_not_divisible_by_replicas(model_dir, tmp_path):
  before = snapshot(model_dir)
  with pytest.raises(ValueError, match=r'global_batch_size=15 is not divisible by the 2 replicas of '
                                       r'MirroredStrategy; use a multiple of 2\.'):
    run_experiment(model_dir, 'cifar100_l2p', ['GLOBAL_BATCH_SIZE = 15'], strategy=test_util.mirrored_strategy(),
                   data_dir=str(tmp_path / 'tfds'))
  assert snapshot(model_dir) == before


def test_image_size_not_divisible_by_patch(capsys, model_dir):
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, '--gin_bindings=IMAGE_SIZE = 30'])
  assert_one_error(code, err, 'image_size=30 is not a positive multiple of the patch size 4 of ViT-tiny; use e.g. 32')
  assert snapshot(model_dir) == before


def test_task_with_no_examples(capsys, model_dir, tmp_path):
  data = mock(as_dataset_fn=labelled_data(lambda name, split: np.arange(200) % 10))  # Classes 0-9 only.
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={tmp_path / "tfds"}'], data)
  assert_one_error(code, err, 'error: Task 1 (task_1) has no training examples: none of its classes [10, 11, 12',
                   "Check the benchmark's classes")
  assert snapshot(model_dir) == before


def test_labels_outside_the_head(capsys, model_dir, tmp_path):
  # An MNIST whose labels go up to 11 (a corrupt or foreign file): the 10-class head cannot hold them.
  data = mock(as_dataset_fn=labelled_data(lambda name, split: np.arange(120) % 12))
  before = snapshot(model_dir)
  code, err, out = run_main(capsys, [f'--model_dir={model_dir}', '--gin_file=experiments/five_datasets_l2p.gin',
                                '--gin_file=local_tiny.gin', ONLY_MNIST,
                                f'--tfds_data_dir={tmp_path / "tfds"}'], data)
  assert_one_error(code, err, "The labels of task 0 (mnist) training data range over 0..11, outside the head's 10 "
                   'classes (0..9)', "fix the benchmark's num_classes or its label offsets")
  assert snapshot(model_dir) == before


def test_unwritable_model_dir(capsys, tmp_path):
  if os.geteuid() == 0:  # root writes anywhere: a path below a regular file cannot be created by anyone.
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    target = blocker / 'run'
  else:
    locked = tmp_path / 'read_only'
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / 'run'
  code, err, out = run_main(capsys, [f'--model_dir={target}', *TINY, f'--tfds_data_dir={tmp_path / "tfds"}'], mock())
  assert_one_error(code, err, f'error: model_dir {target} is not writable',
                   'choose a directory you can write to, or fix its permissions')
  assert not os.path.exists(target)


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A finished tiny run, copied by each test that needs one."""
  root = tmp_path_factory.mktemp('finished')
  with mock():
    run_experiment(root / 'run', 'cifar100_l2p', data_dir=str(root / 'tfds'))
  return root / 'run', str(root / 'tfds')


def test_model_dir_of_a_different_config_is_refused_and_overwrite_moves_it_aside(capsys, tmp_path, finished_run):
  model_dir = tmp_path / 'run'
  shutil.copytree(finished_run[0], model_dir)
  before = snapshot(model_dir)
  args = [f'--model_dir={model_dir}', *TINY, f'--tfds_data_dir={finished_run[1]}',
          '--gin_bindings=LEARNING_RATE = 0.01']
  code, err, out = run_main(capsys, args, mock())
  assert_one_error(code, err, f'error: model_dir {model_dir} holds a run of a different config',
                   '- LEARNING_RATE = 0.03', '+ LEARNING_RATE = 0.01', '--overwrite')
  assert len([l for l in err.splitlines() if l.startswith('  - ') or l.startswith('  + ')]) == 2
  assert snapshot(model_dir) == before
  # Cadence settings are not a different config: a finished run with another log / checkpoint cadence just reports.
  code, err, out = run_main(capsys, [*args[:-1], '--gin_bindings=config.Cadence.log_every_steps = 1000'], mock())
  assert code == 0, err
  assert json.loads((model_dir / 'results.json').read_text())['accuracy_matrix'] == json.loads(
      before['results.json'])['accuracy_matrix']
  # --overwrite: the old run is moved aside intact (and the message says where), and a new one starts.
  before_overwrite = snapshot(model_dir)
  code, err, out = run_main(capsys, [*args, '--overwrite', '--gin_bindings=benchmarks.Limits.max_tasks = 1'],
                            mock())
  assert code == 0, err
  moved = [p for p in tmp_path.iterdir() if p.name.startswith('run.overwritten-')]
  assert len(moved) == 1
  assert f'--overwrite: moved the previous contents of {model_dir} to {moved[0]}' in out
  assert snapshot(moved[0]) == before_overwrite
  assert 'LEARNING_RATE = 0.01' in (model_dir / 'config.gin').read_text()
  assert json.loads((model_dir / 'results.json').read_text())['num_tasks'] == 1
