"""DualPrompt and CODA-Prompt through the unchanged engine export: a tiny run is trained (local_tiny.gin on
`tfds.testing.mock_data`), exported as a SavedModel, reloaded and compared with the method's own predictions."""

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from l2p_tf import export as export_lib
from l2p_tf import gin_utils
from l2p_tf.engine import loop


@pytest.mark.parametrize('experiment, prompts', [('cifar100_dualprompt', 1), ('cifar100_coda_prompt', 0)])
def test_export_round_trip(tmp_path, experiment, prompts):
  model_dir, data_dir, export_dir = str(tmp_path / 'run'), str(tmp_path / 'tfds'), str(tmp_path / 'saved_model')
  with tfds.testing.mock_data(num_examples=1000):
    gin_utils.parse([f'experiments/{experiment}.gin', 'local_tiny.gin'], ['config.Evaluation.batch_size = 48'])
    try:
      res = gin.get_configurable(loop.run)(model_dir=model_dir, data_dir=data_dir,
                                           strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
    finally:
      gin.clear_config()
    assert res['complete']
    run = export_lib.load_run(model_dir, data_dir=data_dir)
    diffs = {}
    export_lib.export(run, export_dir, class_names=export_lib.resolve_class_names(run.benchmark, model_dir=model_dir),
                      verify_tolerance=1e-5, diffs_out=diffs)
  assert diffs and max(diffs.values()) <= 1e-5
  loaded = tf.saved_model.load(export_dir)
  images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
  out = loaded.signatures['serving_default'](images=tf.constant(images))
  selection = 'instancewise' if prompts else None
  want = run.method.predict(tf.constant(images, tf.float32) / 255.0, selection=selection)['logits'].numpy()
  np.testing.assert_allclose(out['logits'].numpy(), want, atol=1e-5)
  assert out['selected_prompts'].shape == (3, prompts)
