"""DatasetBuilderTestCase for core50_local on the dummy data next to this file."""

import tensorflow_datasets as tfds

from datasets.core50 import core50_dataset_builder


class Core50LocalTest(tfds.testing.DatasetBuilderTestCase):
  """Prepares dummy_data/core50_128x128.zip (read as the manual directory) and checks every session's size."""

  DATASET_CLASS = core50_dataset_builder.Builder
  SPLITS = {s: 4 for s in core50_dataset_builder.SESSIONS}  # 2 frames of objects o1 and o2 in every session
  SKIP_CHECKSUMS = True  # Nothing is downloaded.


if __name__ == '__main__':
  tfds.testing.test_main()
