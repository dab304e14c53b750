"""DatasetBuilderTestCase for imagenet_r_local on the dummy data next to this file."""

import tensorflow_datasets as tfds

from datasets.imagenet_r import imagenet_r_dataset_builder


class ImagenetRLocalTest(tfds.testing.DatasetBuilderTestCase):
  """Prepares dummy_data/imagenet-r.tar (read as the manual directory) and checks the split's size."""

  DATASET_CLASS = imagenet_r_dataset_builder.Builder
  SPLITS = {'test': 120}  # 3 images of each of the first 40 classes (tasks 0 and 1 of 10 x 20)
  SKIP_CHECKSUMS = True  # Nothing is downloaded.


if __name__ == '__main__':
  tfds.testing.test_main()
