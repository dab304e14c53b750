"""npz loader: strict key map, error messages, position-embedding resampling, dtypes, gfile paths."""

import numpy as np
import pytest
import tensorflow as tf

from l2p_tf.checkpoints import npz_loader
from l2p_tf.models import vit as vit_lib
from tests import test_util

POSEMB = npz_loader.POSEMB_KEY


def tiny(image_size=32, **kwargs):
  return vit_lib.VisionTransformer(variant='tiny', image_size=image_size, **kwargs)


def save(path, arrays):
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  return str(path)


def numpy_bilinear(grid, new):
  """Half-pixel-centre bilinear resize of an (h, w, d) grid, written out by hand."""
  h, w, _ = grid.shape

  def coords(n_in, n_out):
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, x - lo

  y0, y1, fy = coords(h, new)
  x0, x1, fx = coords(w, new)
  top = grid[y0][:, x0] * (1 - fx)[None, :, None] + grid[y0][:, x1] * fx[None, :, None]
  bot = grid[y1][:, x0] * (1 - fx)[None, :, None] + grid[y1][:, x1] * fx[None, :, None]
  return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def test_load_copies_every_array(tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)
  model = tiny()
  report = npz_loader.load_vit_npz(model, save(tmp_path / 'a.npz', arrays))
  assert sorted(report.loaded) == sorted(arrays)
  for key, var in model.npz_variables().items():
    np.testing.assert_array_equal(var.numpy(), arrays[key])


def test_errors_list_every_missing_unexpected_and_misshaped_key(tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)
  del arrays['Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias']
  arrays['Transformer/encoderblock_7/LayerNorm_0/scale'] = np.ones(64, np.float32)
  arrays['embedding/bias'] = np.zeros(65, np.float32)
  model = tiny()
  before = [v.numpy().copy() for v in model.variables]
  with pytest.raises(npz_loader.CheckpointMismatchError) as e:
    npz_loader.load_vit_npz(model, save(tmp_path / 'bad.npz', arrays))
  msg = str(e.value)
  assert 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias' in msg
  assert 'Transformer/encoderblock_7/LayerNorm_0/scale' in msg
  assert 'embedding/bias: file (65,) vs model (64,)' in msg
  assert 'bad.npz' in msg
  assert e.value.missing == ['Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias']
  # Strict loading assigns nothing when it refuses.
  for b, v in zip(before, model.variables):
    np.testing.assert_array_equal(b, v.numpy())


def test_wrong_variant_is_named(tmp_path):
  # A Ti/16 file into an S/16 model: every block is mis-shaped; the message names both variants.
  path = save(tmp_path / 'ti.npz', test_util.random_vit_arrays('Ti/16', 32))
  with pytest.raises(npz_loader.CheckpointMismatchError, match=r'looks like ViT-Ti/16 but the model is ViT-S/16'):
    npz_loader.load_vit_npz(vit_lib.VisionTransformer(variant='S/16', image_size=32), path)


def test_non_strict_loads_what_fits(tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)
  arrays['embedding/bias'] = np.zeros(65, np.float32)
  model = tiny()
  report = npz_loader.load_vit_npz(model, save(tmp_path / 'a.npz', arrays), strict=False)
  assert 'embedding/bias' not in report.loaded
  np.testing.assert_array_equal(model.cls.numpy(), arrays['cls'])


def test_posemb_resampling_keeps_cls_and_matches_bilinear(tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)  # 8x8 grid
  model = tiny(image_size=48)  # 12x12 grid
  report = npz_loader.load_vit_npz(model, save(tmp_path / 'a.npz', arrays))
  assert report.resampled == (8, 12)
  got = model.pos_embedding.numpy()
  src = arrays[POSEMB]
  np.testing.assert_array_equal(got[0, 0], src[0, 0])
  want = numpy_bilinear(src[0, 1:].reshape(8, 8, -1).astype(np.float64), 12).reshape(144, -1)
  np.testing.assert_allclose(got[0, 1:], want, atol=1e-6)
  # The resampled model runs.
  assert model(tf.zeros([1, 48, 48, 3])).shape == (1, 64)


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_half_precision_files_load(tmp_path, dtype):
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  np_dtype = ml_dtypes.bfloat16 if dtype == 'bfloat16' else np.float16
  arrays = test_util.random_vit_arrays('tiny', 32, dtype=np_dtype)
  model = tiny()
  npz_loader.load_vit_npz(model, save(tmp_path / 'h.npz', arrays))
  assert model.cls.dtype == tf.float32
  np.testing.assert_array_equal(model.cls.numpy(), arrays['cls'].astype(np.float32))


def test_gfile_paths(tmp_path):
  arrays = test_util.random_vit_arrays('tiny', 32)
  local = save(tmp_path / 'a.npz', arrays)
  remote = 'ram://checkpoints/vit_tiny.npz'
  tf.io.gfile.makedirs('ram://checkpoints')
  tf.io.gfile.copy(local, remote, overwrite=True)
  model = tiny()
  npz_loader.load_vit_npz(model, remote)
  np.testing.assert_array_equal(model.cls.numpy(), arrays['cls'])


def test_missing_file(tmp_path):
  with pytest.raises(npz_loader.CheckpointError, match=r'nope\.npz does not exist.*INIT_CHECKPOINT'):
    npz_loader.load_vit_npz(tiny(), str(tmp_path / 'nope.npz'))


def test_not_an_npz(tmp_path):
  path = tmp_path / 'junk.npz'
  path.write_text('this is not a zip archive')
  with pytest.raises(npz_loader.CheckpointError,
                     match=r"junk\.npz is not an \.npz archive \(not a zip file; it starts with b'this is not a zip"):
    npz_loader.load_vit_npz(tiny(), str(path))
  truncated = tmp_path / 'truncated.npz'
  np.savez(truncated, a=np.zeros(1000, np.float32))
  truncated.write_bytes(truncated.read_bytes()[:-200])
  with pytest.raises(npz_loader.CheckpointError,
                     match=r'truncated\.npz is not a readable \.npz archive \(a truncated or damaged zip file\)'):
    npz_loader.load_vit_npz(tiny(), str(truncated))


def test_detect_variant():
  assert npz_loader.detect_variant(test_util.random_vit_arrays('tiny', 32)) == 'tiny'
  assert npz_loader.detect_variant({'foo': np.zeros(3)}) is None
