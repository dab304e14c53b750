"""domainnet_continual: DomainNet (cleaned) with all six domains in one data set and a `domain` feature.

Splits are per domain (`real_train`, `real_test`, `painting_train`, ...), so one domain is read without touching the
others, and tfds split arithmetic gives any union (`'real_train+sketch_train'`). The continual protocol built on top of
it (l2p_tf.data.benchmarks.domainnet) is documented in README.md next to this file.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict, Iterator, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

# The six domains, in the order of the continual protocol's tasks (see README.md).
DOMAINS = ('real', 'painting', 'clipart', 'quickdraw', 'infograph', 'sketch')
BASE_URL = 'http://csr.bu.edu/ftp/visda/2019/multi-source'
# Where the official archives live on the DomainNet server (two of them moved under groundtruth/).
IMAGE_URLS = {
    'real': f'{BASE_URL}/real.zip',
    'painting': f'{BASE_URL}/groundtruth/painting.zip',
    'clipart': f'{BASE_URL}/groundtruth/clipart.zip',
    'quickdraw': f'{BASE_URL}/quickdraw.zip',
    'infograph': f'{BASE_URL}/infograph.zip',
    'sketch': f'{BASE_URL}/sketch.zip',
}
SPLIT_URLS = {f'{d}_{s}': f'{BASE_URL}/domainnet/txt/{d}_{s}.txt' for d in DOMAINS for s in ('train', 'test')}
NUM_CLASSES = 345

_DESCRIPTION = """\
DomainNet (cleaned version): about 0.6 million images of 345 object classes in six domains (real photos, painting,
clipart, quickdraw, infograph, sketch). Unlike tfds's `domainnet` (one config per domain), this builder keeps every
domain in one data set, adds a `domain` ClassLabel feature, and has one train and one test split per domain
(`<domain>_train`, `<domain>_test`) from the official split lists.
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place the official files of http://ai.bu.edu/DomainNet/ in the manual directory (--tfds_manual_dir), either directly
or in a `domainnet/` sub-folder:
  real.zip painting.zip clipart.zip quickdraw.zip infograph.zip sketch.zip            (image archives)
  real_train.txt real_test.txt ... sketch_train.txt sketch_test.txt                    (split lists)
Without these files the builder downloads them from the DomainNet server.
"""


def _read_lines(path) -> list[str]:
  with tf.io.gfile.GFile(os.fspath(path)) as f:
    return [line.strip() for line in f.read().splitlines() if line.strip()]


def find_manual_folder(manual_dir) -> Optional[str]:
  """`manual_dir` or its `domainnet/` sub-folder, whichever holds every archive and split list; else None."""
  names = [f'{d}.zip' for d in DOMAINS] + [f'{s}.txt' for s in SPLIT_URLS]
  for folder in (os.fspath(manual_dir), os.path.join(os.fspath(manual_dir), 'domainnet')):
    if all(tf.io.gfile.exists(os.path.join(folder, n)) for n in names):
      return folder
  return None


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for domainnet_continual."""

  name = 'domainnet_continual'  # tfds already registers `domainnet` (one config per domain, no domain feature).
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: six domains, `domain` feature, per-domain train/test splits.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names_file=os.path.join(os.path.dirname(__file__), 'class_names.txt')),
            'domain': tfds.features.ClassLabel(names=list(DOMAINS)),
            'path': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://ai.bu.edu/DomainNet/',
    )

  def _manual_folder(self, dl_manager: tfds.download.DownloadManager) -> Optional[str]:
    """The manual folder holding every archive and list, or None (then they are downloaded)."""
    try:
      manual_dir = dl_manager.manual_dir
    except (AssertionError, ValueError):  # Missing or empty manual directory.
      return None
    return find_manual_folder(manual_dir)

  def download_urls(self, manual_dir=None) -> list[str]:
    """The URLs preparing would download: none when `manual_dir` holds every file, else all 18.

    The checksums are not recorded (checksums.tsv), so tfds's `url_infos` is empty; callers use this list to check
    that the server can be reached before tfds retries a download for minutes.
    """
    if manual_dir and find_manual_folder(manual_dir) is not None:
      return []
    return list(IMAGE_URLS.values()) + list(SPLIT_URLS.values())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Returns SplitGenerators: `<domain>_train` and `<domain>_test` for every domain."""
    folder = self._manual_folder(dl_manager)
    if folder is not None:
      archives = {d: os.path.join(folder, f'{d}.zip') for d in DOMAINS}
      lists = {s: os.path.join(folder, f'{s}.txt') for s in SPLIT_URLS}
    else:
      archives = dl_manager.download(IMAGE_URLS)
      lists = dl_manager.download(SPLIT_URLS)
    return {s: self._generate_examples(archives[s.rsplit('_', 1)[0]], lists[s]) for s in SPLIT_URLS}

  def _generate_examples(self, archive, split_list) -> Iterator:
    """Yields (key, example) for every line "domain/class/name.jpg label" of a split list.

    Raises:
      ValueError: if a line is malformed, its label is out of range, or its class folder disagrees with its label.
    """
    names = self.info.features['label'].names
    with tf.io.gfile.GFile(os.fspath(archive), 'rb') as f, zipfile.ZipFile(f) as zf:
      members = set(zf.namelist())
      for line in _read_lines(split_list):
        parts = line.split()
        if len(parts) != 2:
          raise ValueError(f'malformed line {line!r} in {os.fspath(split_list)!r}: expected "domain/class/x.jpg id"')
        path, label = parts[0], int(parts[1])
        domain, cls = path.split('/')[:2]
        if not 0 <= label < NUM_CLASSES or names[label].lower() != cls.lower():
          raise ValueError(f'line {line!r}: label {label} does not name class folder {cls!r}')
        if domain not in DOMAINS:
          raise ValueError(f'line {line!r}: unknown domain {domain!r}; known: {list(DOMAINS)}')
        if path not in members:
          raise ValueError(f'{path!r} (listed in {os.fspath(split_list)!r}) is not in {os.fspath(archive)!r}')
        yield path, {'image': zf.read(path), 'label': label, 'domain': domain, 'path': path}
