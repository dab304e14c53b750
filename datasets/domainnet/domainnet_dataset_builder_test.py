"""DatasetBuilderTestCase for domainnet_continual on the dummy data next to this file."""

import tensorflow_datasets as tfds

from datasets.domainnet import domainnet_dataset_builder

_SPLITS = {f'{d}_train': 2 for d in domainnet_dataset_builder.DOMAINS}
_SPLITS.update({f'{d}_test': 1 for d in domainnet_dataset_builder.DOMAINS})


class DomainnetContinualTest(tfds.testing.DatasetBuilderTestCase):
  """Prepares dummy_data/ (read as the manual directory) and checks every split's size."""

  DATASET_CLASS = domainnet_dataset_builder.Builder
  SPLITS = _SPLITS
  SKIP_CHECKSUMS = True  # checksums.tsv is empty until recorded with network access (see README.md).


if __name__ == '__main__':
  tfds.testing.test_main()
