"""The data layer: benchmarks, their examples and their tf.data pipelines. One job per module, lower ones first (a
module imports only modules above it in this list, and `l2p_tf.cl_metrics`):

* `preprocessing`: image transforms for training (random crop, flip, optional JPEG round trip) and evaluation.
* `augment`: RandAugment-style image ops with stateless randomness (backbone pretraining).
* `sources`: tfds builders (local files, offline errors), decoded splits cached per benchmark, parts (`ArrayPart`,
  `StreamPart`), class subsets and the validation hold-out.
* `pipelines`: parts -> deterministic, resumable, per-replica tf.data batches (`epoch_plan`, train / eval datasets,
  `PreprocessConfig`).
* `benchmark`: the contract the trainer uses (`Task`, `ContinualBenchmark`: tasks, evaluation sets, datasets, the
  checks before training, metric curves and console lines) and the shared argument checks.
* `segmented`: `SegmentedBenchmark` (class- / domain-incremental) and `JointBenchmark` (joint-training upper bound).
* `gaussian`: the Gaussian schedule and `GaussianBenchmark` (task-agnostic).
* `benchmarks`: the gin factories (`split_cifar100`, `gaussian_cifar100`, `five_datasets`, `four_domains`, `domainnet`) and `Limits`.
"""
