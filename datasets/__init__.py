"""tfds builders of l2p-tf: local-file mirrors of small data sets, notMNIST, and DomainNet with a `domain` feature.

Importing this package registers the builders with tfds, so `tfds.builder('cifar100_local')`,
`tfds.builder('not_mnist')` or `tfds.builder('domainnet_continual')` work afterwards. See docs/data.md.

The package name shadows HuggingFace's `datasets` distribution; that package is not part of this project's
environment and must stay out of it.
"""

from datasets import local_files
from datasets.domainnet import domainnet_dataset_builder

LOCAL_BUILDERS = local_files.LOCAL_BUILDERS
DOMAINNET = domainnet_dataset_builder.Builder.name
