"""l2p_tf.export and l2p_tf.predict: SavedModel round trip, a fresh process without l2p_tf, accuracy reproduction.

One tiny run (cifar100_l2p.gin + local_tiny.gin on `tfds.testing.mock_data`, 2 tasks) is trained and exported once
for the module; its evaluation batch is set to 24 so the last batch of each 64-image test set is padded (16 real +
8 padding), which the accuracy reproduction has to handle.
"""

import json
import os
import subprocess
import sys
import textwrap

from absl import flags
import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import export as export_lib
from l2p_tf import gin_utils
from l2p_tf import predict as predict_lib
from l2p_tf.data import pipelines
from l2p_tf.data import preprocessing
from l2p_tf.engine import loop

EVAL_BATCH = 48  # A multiple of the prompt pool's vote_size (16); 64 test images per task leave a padded batch.


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """Trains, exports, and collects the final evaluation's batches (uint8 originals and pipeline floats)."""
  root = tmp_path_factory.mktemp('export')
  model_dir, data_dir, export_dir = str(root / 'run'), str(root / 'tfds'), str(root / 'saved_model')
  with tfds.testing.mock_data(num_examples=1000):
    gin_utils.parse(['experiments/cifar100_l2p.gin', 'local_tiny.gin'],
                    [f'config.Evaluation.batch_size = {EVAL_BATCH}'])
    try:
      res = gin.get_configurable(loop.run)(model_dir=model_dir, data_dir=data_dir,
                                                strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
    finally:
      gin.clear_config()
    run = export_lib.load_run(model_dir, data_dir=data_dir)
    names = export_lib.resolve_class_names(run.benchmark, model_dir=model_dir)
    export_lib.export(run, export_dir, class_names=names)
    bench = run.benchmark
    batches = {}  # eval set -> list of batches, in evaluation order.
    for i in bench.eval_ids_after(bench.num_tasks - 1):
      # The evaluation pipeline's rows, batch by batch (one replica, one pipeline, as OneDeviceStrategy evaluates).
      part = bench._eval_part(i)  # pylint: disable=protected-access
      pos, valid = pipelines.eval_rows(part.num_examples, run.eval_batch_size, None)
      rows = np.asarray(part.indices)[pos]
      pipeline = list(bench.eval_dataset(i, None, global_batch_size=run.eval_batch_size))
      assert len(pipeline) * run.eval_batch_size == len(rows)
      batches[i] = []
      for k, b in enumerate(pipeline):
        sl = slice(k * run.eval_batch_size, (k + 1) * run.eval_batch_size)
        batches[i].append({'uint8': part.images[rows[sl]], 'label': np.asarray(part.labels)[rows[sl]],
                           'valid': valid[sl], 'float': b['image'].numpy(), 'pipeline_label': b['label'].numpy(),
                           'pipeline_valid': b['valid'].numpy()})
  return {'res': res, 'run': run, 'names': names, 'model_dir': model_dir, 'data_dir': data_dir,
          'export_dir': export_dir, 'batches': batches, 'loaded': tf.saved_model.load(export_dir)}


def test_run_is_as_expected(trained):
  assert trained['res']['complete'] and trained['run'].eval_batch_size == EVAL_BATCH
  batches = trained['batches'][0]
  assert len(batches) == 2 and batches[-1]['valid'].sum() == 16  # 64 = 48 + 16 (+ 32 padding).
  for b in batches:  # The rows above are the pipeline's rows.
    np.testing.assert_array_equal(b['label'], b['pipeline_label'])
    np.testing.assert_array_equal(b['valid'], b['pipeline_valid'])


def test_in_graph_preprocessing_equals_the_eval_pipeline(trained):
  fn = trained['loaded'].signatures['preprocess']
  for batches in trained['batches'].values():
    for b in batches:
      got = fn(images=tf.constant(b['uint8']))['images'].numpy()
      assert got.dtype == np.float32 and got.shape == b['float'].shape
      np.testing.assert_array_equal(got, b['float'])


@pytest.mark.parametrize('signature,selection', [('serving_default', 'instancewise'), ('batchwise', 'batchwise')])
def test_round_trip_logits_equal_in_process_evaluation(trained, signature, selection):
  net, fn = trained['run'].model, trained['loaded'].signatures[signature]
  assert export_lib.run_crop(trained['run']) == 'pad'  # A 32 px run: the official geometry, served as evaluated.
  # The evaluation's own batches (pipeline floats into the model, the originals' uint8 into the SavedModel) ...
  for b in trained['batches'][1]:
    expected = net(tf.constant(b['float']), training=False, selection=selection)
    out = fn(images=tf.constant(b['uint8']))
    np.testing.assert_allclose(out['logits'].numpy(), expected['logits'].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out['selected_prompts'].numpy(), expected['prompt_ids'].numpy())
  # ... and non-square images of another size, preprocessed in process by the pipeline's function.
  images = np.random.default_rng(0).integers(0, 256, size=(5, 45, 71, 3), dtype=np.uint8)
  x = tf.stack([preprocessing.preprocess_eval(tf.constant(im), image_size=32, crop=export_lib.run_crop(trained['run'])) for im in images])
  expected = net(x, training=False, selection=selection)
  out = fn(images=tf.constant(images))
  logits = out['logits'].numpy()
  assert logits.dtype == np.float32 and logits.shape == (5, 100)
  np.testing.assert_allclose(logits, expected['logits'].numpy(), atol=1e-5, rtol=0)
  probs = out['probabilities'].numpy()
  np.testing.assert_allclose(probs, tf.nn.softmax(expected['logits']).numpy(), atol=1e-6)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  top = out['top_k_classes'].numpy()
  assert top.shape == (5, 5) and top.dtype == np.int32
  np.testing.assert_array_equal(top[:, 0], logits.argmax(-1))
  np.testing.assert_allclose(out['top_k_probabilities'].numpy(), np.take_along_axis(probs, top, -1), atol=1e-7)
  names = np.array(trained['names'])
  assert [[n.decode() for n in row] for row in out['top_k_class_names'].numpy()] == names[top].tolist()
  prompts = out['selected_prompts'].numpy()
  assert prompts.shape == (5, 4) and prompts.dtype == np.int32
  if signature == 'batchwise':  # One vote for the whole request.
    assert (prompts == prompts[:1]).all()
  empty = fn(images=tf.zeros([0, 9, 9, 3], tf.uint8))  # An empty request: empty outputs, no error.
  assert empty['logits'].shape == (0, 100) and empty['selected_prompts'].shape == (0, 4)


def test_batchwise_signature_reproduces_the_final_accuracy_row(trained):
  """Each evaluation batch's real images, fed as one request, reproduce the recorded accuracy exactly.

  Padding examples (valid=False) take no part in the evaluation's batchwise vote, so a request of the batch's real
  examples only gets the same vote and the same predictions.
  """
  final_row = json.load(open(os.path.join(trained['model_dir'], 'results.json')))['accuracy_matrix'][-1]
  fn = trained['loaded'].signatures['batchwise']
  for i, batches in trained['batches'].items():
    correct = count = 0
    for b in batches:
      v = b['valid']
      pred = fn(images=tf.constant(b['uint8'][v]))['logits'].numpy().argmax(-1)
      correct += int((pred == b['label'][v]).sum())
      count += int(v.sum())
    assert count == 64
    assert final_row[i] == pytest.approx(100.0 * correct / count, abs=1e-3), (i, correct, count)
    assert round(final_row[i] * count / 100.0) == correct


def test_metadata_and_assets(trained):
  loaded, export_dir = trained['loaded'], trained['export_dir']
  assert set(loaded.signatures) == set(export_lib.SIGNATURES)
  meta = {k: v.numpy() for k, v in loaded.signatures['metadata']().items()}
  assert [n.decode() for n in meta['class_names']] == trained['names']
  # The benchmark's names (mock_data's cifar100 builder names its labels '0'..'99').
  assert trained['names'] == list(trained['run'].benchmark.class_names) and len(trained['names']) == 100
  assert (meta['image_size'], meta['num_classes'], meta['top_k'], meta['pool_size'], meta['prompts_per_image']) == (
      32, 100, 5, 10, 4)
  with open(os.path.join(export_dir, 'assets', export_lib.CLASS_NAMES_ASSET)) as f:
    assert f.read().splitlines() == trained['names']
  with open(os.path.join(export_dir, 'assets', export_lib.EXPORT_INFO_ASSET)) as f:
    info = json.load(f)
  assert info['benchmark'] == 'split_cifar100' and info['checkpoint'] == trained['run'].checkpoint
  assert trained['run'].checkpoint == tf.train.latest_checkpoint(os.path.join(trained['model_dir'], 'checkpoints'))


def test_loads_and_runs_in_a_fresh_process_without_l2p_tf(trained, tmp_path):
  images = np.random.default_rng(1).integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
  np.save(tmp_path / 'images.npy', images)
  code = textwrap.dedent("""
      import sys
      import numpy as np
      import tensorflow as tf
      model = tf.saved_model.load(sys.argv[1])
      images = tf.constant(np.load(sys.argv[2]))
      for name in ('serving_default', 'batchwise'):
        np.save(f'{sys.argv[3]}/{name}.npy', model.signatures[name](images=images)['logits'].numpy())
      names = model.signatures['metadata']()['class_names'].numpy()
      assert names.shape == (100,) and names[7] == sys.argv[4].encode(), names[:8]
      assert 'l2p_tf' not in sys.modules, 'l2p_tf was imported'
      assert not any(m.startswith(('l2p_tf', 'gin', 'tf_keras')) for m in sys.modules), sorted(sys.modules)
      print('ok')
  """)
  env = {k: v for k, v in os.environ.items() if k not in ('TF_USE_LEGACY_KERAS', 'PYTHONPATH')}
  proc = subprocess.run([sys.executable, '-c', code, trained['export_dir'], str(tmp_path / 'images.npy'),
                         str(tmp_path), trained['names'][7]], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]
  x = tf.stack([preprocessing.preprocess_eval(tf.constant(im), image_size=32, crop=export_lib.run_crop(trained['run'])) for im in images])
  for name, selection in export_lib.SELECTIONS.items():
    expected = trained['run'].model(x, training=False, selection=selection)['logits'].numpy()
    np.testing.assert_allclose(np.load(tmp_path / f'{name}.npy'), expected, atol=1e-5, rtol=0)


def test_predict_prints_top5_of_image_files(trained, tmp_path, capsys):
  rng = np.random.default_rng(2)
  paths = []
  for name, shape, encode in [('a.png', (50, 70, 3), tf.io.encode_png), ('b.jpg', (33, 33, 3), tf.io.encode_jpeg),
                              ('gray.png', (40, 30, 1), tf.io.encode_png)]:
    path = str(tmp_path / name)
    tf.io.write_file(path, encode(rng.integers(0, 256, size=shape, dtype=np.uint8)))
    paths.append(path)
  results = predict_lib.predict(trained['export_dir'], paths, loaded=trained['loaded'])
  fn = trained['loaded'].signatures['serving_default']
  for r, path in zip(results, paths):
    image = predict_lib.load_image(path)
    assert image.shape[-1] == 3 and image.dtype == np.uint8
    probs = fn(images=tf.constant(image[None]))['probabilities'].numpy()[0]
    assert r['classes'] == np.argsort(-probs, kind='stable')[:5].tolist()
    assert r['names'] == [trained['names'][c] for c in r['classes']]
    np.testing.assert_allclose(r['probabilities'], probs[r['classes']], rtol=1e-6)
    assert r['probabilities'] == sorted(r['probabilities'], reverse=True) and len(r['selected_prompts']) == 4

  fv = flags.FlagValues()
  predict_lib.define_flags(fv)
  rest = fv(['predict', f'--export_dir={trained["export_dir"]}', *paths])
  assert predict_lib.run_cli(fv, rest) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3 * 6
  for j, r in enumerate(results):
    assert lines[6 * j] == r['path']
    for rank in range(5):
      name, prob = lines[6 * j + 1 + rank].split()[1:]
      assert lines[6 * j + 1 + rank].startswith(f'  {rank + 1}. ')
      assert name == r['names'][rank] and float(prob) == pytest.approx(r['probabilities'][rank], abs=1e-4)

  fv = flags.FlagValues()
  predict_lib.define_flags(fv)
  rest = fv(['predict', f'--export_dir={trained["export_dir"]}', str(tmp_path / 'missing.png')])
  assert predict_lib.run_cli(fv, rest) == 2
  assert 'missing.png' in capsys.readouterr().err


def test_cli_exports_an_older_checkpoint_and_refuses_to_overwrite(trained, tmp_path, capsys):
  ckpt_dir = os.path.join(trained['model_dir'], 'checkpoints')
  older = [p for p in tf.train.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths
           if p != trained['run'].checkpoint][0]
  names_file = tmp_path / 'names.txt'
  names_file.write_text(''.join(f'n{i}\n' for i in range(100)))
  out = str(tmp_path / 'older')

  def cli(*args):
    fv = flags.FlagValues()
    export_lib.define_flags(fv)
    rest = fv(['export', f'--model_dir={trained["model_dir"]}', f'--export_dir={out}', *args])
    return export_lib.run_cli(fv, rest)

  assert cli(f'--checkpoint={older}', f'--class_names={names_file}') == 0
  assert 'Verified' in capsys.readouterr().out
  loaded = tf.saved_model.load(out)
  assert loaded.signatures['metadata']()['class_names'].numpy()[7] == b'n7'
  # The older checkpoint is not the newest: other weights, other logits.
  images = tf.constant(trained['batches'][0][0]['uint8'])
  old = loaded.signatures['serving_default'](images=images)['logits'].numpy()
  new = trained['loaded'].signatures['serving_default'](images=images)['logits'].numpy()
  assert np.abs(old - new).max() > 1e-3
  # An export directory in the way, a missing checkpoint, a run directory without config.gin: exit code 2.
  assert cli('--class_names=index') == 2
  assert 'not empty' in capsys.readouterr().err
  assert cli('--class_names=index', '--overwrite', '--checkpoint=/nonexistent/ckpt-1') == 2
  assert 'no such checkpoint' in capsys.readouterr().err
  with pytest.raises(export_lib.ExportError, match='config.gin not found'):
    export_lib.load_run(str(tmp_path))
