"""tfds builders of l2p-tf: local-file mirrors of small data sets, notMNIST, DomainNet with a `domain` feature,
ImageNet-R and CORe50 from their archives.

Importing this package registers the builders with tfds, so `tfds.builder('cifar100_local')`,
`tfds.builder('not_mnist')`, `tfds.builder('domainnet_continual')`,
`tfds.builder('imagenet_r_local')` or `tfds.builder('core50_local')` work afterwards. See docs/data.md.

The package name shadows HuggingFace's `datasets` distribution; that package is not part of this project's
environment and must stay out of it.
"""

from datasets import local_files
from datasets.core50 import core50_dataset_builder
from datasets.domainnet import domainnet_dataset_builder
from datasets.imagenet_r import imagenet_r_dataset_builder

LOCAL_BUILDERS = local_files.LOCAL_BUILDERS
DOMAINNET = domainnet_dataset_builder.Builder.name
IMAGENET_R = imagenet_r_dataset_builder.Builder.name
CORE50 = core50_dataset_builder.Builder.name
