"""core50_local: CORe50 (50 objects filmed in 11 sessions) at 128x128 from the official `core50_128x128.zip`, with a
`session` feature and one split per session (`s1` ... `s11`).

The continual protocol built on it (l2p_tf.data.benchmarks.core50, the l2p CORe50 config): domain-incremental, one
task per training session s1, s2, s4, s5, s6, s8, s9, s11, every task with all 50 classes, and one common test set,
sessions s3, s7 and s10. Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Iterator, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

ARCHIVE = 'core50_128x128.zip'
FOLDER = 'core50_128x128'
SESSIONS = tuple(f's{i}' for i in range(1, 12))
OBJECTS = tuple(f'o{i}' for i in range(1, 51))
_PATH = re.compile(r'^(?:.*/)?(s\d+)/(o\d+)/([^/]+\.png)$')

_DESCRIPTION = """\
CORe50: 164,866 128x128 RGB frames of 50 household objects (10 categories x 5) in 11 sessions with different
backgrounds and lighting. Labels are the 50 objects (o1..o50 -> 0..49); `session` (s1..s11) is the domain. One split
per session.
"""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Place core50_128x128.zip (http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip), or its extracted
core50_128x128/ folder (s1/o1/C_01_01_000.png ...), in the manual directory (--tfds_manual_dir).
"""


def find_source(manual_dir) -> Optional[str]:
  """`<manual_dir>/core50_128x128.zip` or the extracted `<manual_dir>/core50_128x128/`, whichever exists; else None."""
  for name in (ARCHIVE, FOLDER):
    path = os.path.join(os.fspath(manual_dir), name)
    if tf.io.gfile.exists(path):
      return path
  return None


def _archive_members(path, session: str) -> Iterator[tuple[str, bytes]]:
  with tf.io.gfile.GFile(path, 'rb') as f, zipfile.ZipFile(f) as zf:
    for name in sorted(zf.namelist()):
      m = _PATH.match(name)
      if m and m.group(1) == session:
        yield f'{m.group(1)}/{m.group(2)}/{m.group(3)}', zf.read(name)


def _folder_members(root, session: str) -> Iterator[tuple[str, bytes]]:
  session_dir = os.path.join(root, session)
  if not tf.io.gfile.isdir(session_dir):
    return
  for obj in sorted(tf.io.gfile.listdir(session_dir)):
    obj = obj.rstrip('/')
    for name in sorted(tf.io.gfile.listdir(os.path.join(session_dir, obj))):
      if name.endswith('.png'):
        with tf.io.gfile.GFile(os.path.join(session_dir, obj, name), 'rb') as f:
          yield f'{session}/{obj}/{name}', f.read()


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for core50_local."""

  name = 'core50_local'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: 128x128 frames, per-session splits, `session` feature.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(128, 128, 3), encoding_format='png'),
            'label': tfds.features.ClassLabel(names=list(OBJECTS)),
            'session': tfds.features.ClassLabel(names=list(SESSIONS)),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://vlomonaco.github.io/core50/',
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
    return {s: self._generate_examples(source, s) for s in SESSIONS}

  def _generate_examples(self, source, session: str) -> Iterator:
    """Yields (path, example) for every frame of `session`.

    Raises:
      ValueError: an object folder outside o1..o50.
    """
    members = _folder_members(source, session) if tf.io.gfile.isdir(source) else _archive_members(source, session)
    for path, data in members:
      obj = path.split('/')[1]
      if obj not in OBJECTS:
        raise ValueError(f'{path}: {obj!r} is not one of the 50 CORe50 objects (o1..o50).')
      yield path, {'image': data, 'label': obj, 'session': session, 'file_name': path}
