"""imagenet_r_local: ImageNet-R (200 ImageNet classes as renditions: art, cartoons, sketches, ...) from the official
`imagenet-r.tar` in the manual directory, with 200 labels.

Like tfds's `imagenet_r` (0.2.0), one `test` split of every image, the same example keys (`<wnid>_<file name>`) and
`file_name` feature; the continual protocols cut it (l2p: `test[:80%]` for training and `test[80%:]` for testing).
Unlike it, `label` has 200 classes, the wnids in ascending order (which is ascending ImageNet-1k index): the mapping
the l2p code applies to tfds's 1000-class labels. Nothing is downloaded.
"""

from __future__ import annotations

import os
import tarfile
from typing import Iterator, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

ARCHIVE = 'imagenet-r.tar'
FOLDER = 'imagenet-r'
NUM_CLASSES = 200
WNIDS_FILE = os.path.join(os.path.dirname(__file__), 'wnids.txt')

_DESCRIPTION = """\
ImageNet-R(endition): 30,000 renditions (art, cartoons, deviantart, graffiti, embroidery, graphics, origami,
paintings, patterns, plastic objects, plush objects, sculptures, sketches, tattoos, toys, video game) of 200
ImageNet classes. One `test` split; labels 0..199 in ascending wnid order.
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place imagenet-r.tar (https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar), or its extracted imagenet-r/
folder, in the manual directory (--tfds_manual_dir).
"""


def find_source(manual_dir) -> Optional[str]:
  """`<manual_dir>/imagenet-r.tar` or the extracted `<manual_dir>/imagenet-r/` folder, whichever exists; else None."""
  for name in (ARCHIVE, FOLDER):
    path = os.path.join(os.fspath(manual_dir), name)
    if tf.io.gfile.exists(path):
      return path
  return None


def _images_in_folder(root) -> Iterator[tuple[str, str, bytes]]:
  for wnid in sorted(tf.io.gfile.listdir(root)):
    wnid = wnid.rstrip('/')
    class_dir = os.path.join(root, wnid)
    if not tf.io.gfile.isdir(class_dir):
      continue
    for name in sorted(tf.io.gfile.listdir(class_dir)):
      with tf.io.gfile.GFile(os.path.join(class_dir, name), 'rb') as f:
        yield wnid, name, f.read()


def _images_in_archive(path) -> Iterator[tuple[str, str, bytes]]:
  with tf.io.gfile.GFile(path, 'rb') as f, tarfile.open(fileobj=f, mode='r:*') as tar:
    for member in tar:
      parts = member.name.split('/')
      if not member.isfile() or len(parts) != 3 or parts[0] != FOLDER:
        continue
      yield parts[1], parts[2], tar.extractfile(member).read()


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for imagenet_r_local."""

  name = 'imagenet_r_local'  # tfds registers `imagenet_r` (downloads; 1000-class labels).
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: tfds imagenet_r keys and split, 200-class labels, local archive.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names_file=WNIDS_FILE),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/hendrycks/imagenet-r',
    )

  def download_urls(self, manual_dir=None) -> list[str]:
    """Nothing is downloaded (the files come from the manual directory)."""
    del manual_dir
    return []

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = find_source(dl_manager.manual_dir)
    if source is None:
      raise FileNotFoundError(f'{ARCHIVE} (or {FOLDER}/) not found in {dl_manager.manual_dir}. '
                              + _MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {'test': self._generate_examples(source)}

  def _generate_examples(self, source) -> Iterator:
    """Yields ('<wnid>_<file>', example) for every image, as tfds's imagenet_r.

    Raises:
      ValueError: a class folder that is not one of the 200 wnids.
    """
    names = set(self.info.features['label'].names)
    images = _images_in_folder(source) if tf.io.gfile.isdir(source) else _images_in_archive(source)
    for wnid, name, data in images:
      if wnid not in names:
        raise ValueError(f'{wnid}/{name}: {wnid!r} is not one of the 200 ImageNet-R classes ({WNIDS_FILE}).')
      yield f'{wnid}_{name}', {'image': data, 'label': wnid, 'file_name': f'{wnid}/{name}'}
