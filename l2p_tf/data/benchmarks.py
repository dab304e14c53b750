"""The benchmarks gin binds (`experiment.Experiment.benchmark = @benchmarks.split_cifar100`): keyword-only factories.

* `split_cifar100`: class-incremental, T tasks of 100/T classes (label order or a seeded permutation); with
  joint=True the joint-training upper bound.
* `gaussian_cifar100`: task-agnostic; the class mix drifts smoothly (math in `l2p_tf.data.gaussian`).
* `five_datasets`: class-incremental over CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST (labels offset by 10 each).
* `four_domains`: class-incremental over CIFAR-100 classes 0-9, MNIST, notMNIST (its 10,000-image sample split
  80/20 with a fixed seed) and Fashion-MNIST, 10 classes each.
* `domainnet`: domain-incremental over six domains (default) or class-incremental over the pooled domains.
* `split_imagenet_r`: class-incremental, T tasks of 200/T ImageNet-R classes, the l2p 80/20 cut of its one split.
* `core50`: domain-incremental, one task per CORe50 training session (all 50 objects), one common test set.

What every factory shares is bound once, not per factory: `Limits` (example caps that cut a run down to seconds,
`gin_configs/local_tiny.gin`) and `PreprocessConfig` (`image_size`, `jpeg_round_trip`); each data/*.gin passes them
as `limits = @benchmarks.Limits()` and `preprocess = @pipelines.PreprocessConfig()`. `data_dir` / `manual_dir` are
the trainer's `--tfds_data_dir` / `--tfds_manual_dir`, passed by the trainer on each call. `epochs` and `seed` (the
benchmark's own random choices: class order, schedule, example caps; the shuffling and augmentation seed is the one
passed to `train_dataset`) are each factory's own.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence, Union

import numpy as np

from l2p_tf.data import benchmark
from l2p_tf.data import gaussian
from l2p_tf.data import segmented
from l2p_tf.data import sources
from l2p_tf.data.pipelines import PreprocessConfig

HOLDOUTS = ('test', 'validation')
FIVE_DATASETS = ('cifar10', 'mnist', 'svhn_cropped', 'not_mnist', 'fashion_mnist')
DOMAINNET_DOMAINS = ('real', 'painting', 'clipart', 'quickdraw', 'infograph', 'sketch')
DOMAINNET_PROTOCOLS = ('domain_incremental', 'class_incremental')


@dataclasses.dataclass(frozen=True)
class Limits:
  """Example caps of a benchmark, to cut a run down to seconds (None: no cap).

  Attributes:
    max_tasks: keep only the first this many tasks (Gaussian: evaluation segments).
    max_train_examples_per_task: seeded random cap per task (Gaussian: the training pool holds this many per
      segment; DomainNet: the first examples in tfds's shuffled file order).
    max_eval_examples_per_task: cap per evaluation set, chosen as the training cap.
  """
  max_tasks: Optional[int] = None
  max_train_examples_per_task: Optional[int] = None
  max_eval_examples_per_task: Optional[int] = None


def _limit_tasks(n: int, max_tasks: Optional[int]) -> int:
  benchmark.check_positive('max_tasks', max_tasks)
  return n if max_tasks is None else min(n, max_tasks)


def split_cifar100(*, num_tasks: int = 10, class_order: str = 'label', order_seed: Optional[int] = None,
                   mask: str = 'class', epochs: Union[int, float] = 5, seed: int = 0, classes=None,
                   holdout: str = 'test', validation_fraction: float = 0.1, joint: bool = False,
                   limits: Limits = Limits(), preprocess: PreprocessConfig = PreprocessConfig(),
                   data_dir: Optional[str] = None,
                   manual_dir: Optional[str] = None) -> segmented.SegmentedBenchmark:
  """Split CIFAR-100: class-incremental, `num_tasks` tasks of (number of classes) / num_tasks classes.

  Args:
    num_tasks: T (must divide the number of classes).
    class_order: 'label' or 'random' (a permutation seeded by `order_seed`).
    order_seed: seed of the random class order (defaults to `seed`).
    mask: 'class' (train each task's logits only; the paper) or 'none'.
    epochs: passes over each task's training images (5,000 per 10 classes).
    seed: the benchmark's own seed (class order default, example caps, validation hold-out).
    classes: a subset of CIFAR-100's classes ('0-49', '0,3,9' or a list; None: all 100). The benchmark then has
      len(classes) classes, relabelled 0..len-1 in the given order (the head is that wide); class names follow.
    holdout: 'test' (evaluate on the test images; for reported results) or 'validation' (train on the training
      images minus a seeded `validation_fraction` of every class and evaluate on that fraction: for choosing
      hyperparameters without touching the test set).
    validation_fraction: share of each class's training images held out with holdout='validation'.
    joint: the joint-training upper bound: one training segment holding every task's classes and images
      (`epochs` passes over all of them, so as many steps as the sequential run), evaluated on each task's set
      (a `JointBenchmark`).
    limits: example caps (tiny runs): the first `max_tasks` tasks, a seeded random cap per task and per evaluation
      set (joint: the per-task cap times the number of tasks).
    preprocess: image options (network input side, JPEG round trip before the random crop as in the official code).
    data_dir: tfds data directory (`--tfds_data_dir`).
    manual_dir: local downloads (`--tfds_manual_dir`); CIFAR-100 then comes from `cifar-100-python/` there.

  Returns:
    The benchmark; evaluation set i is task i's classes of the test (or validation) set.

  Raises:
    ValueError: an unknown holdout, class order or mask, a malformed class subset, a number of tasks that does not
      divide the classes, a non-positive cap.
  """
  benchmark.check_choice('holdout', holdout, HOLDOUTS)
  subset = sources.parse_classes(classes, 100)
  num_classes = 100 if subset is None else len(subset)
  order = benchmark.make_class_order(num_classes, class_order, seed=seed if order_seed is None else order_seed)
  groups = benchmark.split_classes(order, num_tasks)[:_limit_tasks(num_tasks, limits.max_tasks)]
  data = sources.Data(data_dir, manual_dir)
  part = functools.partial(sources.array_part, data, 'cifar100',
                           subset=None if subset is None else tuple(subset.tolist()),
                           validation=(validation_fraction, seed) if holdout == 'validation' else None)
  names = [f'task_{t}' for t in range(len(groups))]
  evals = [functools.partial(part, 1, classes=g, limit=limits.max_eval_examples_per_task, seed=seed + t)
           for t, g in enumerate(groups)]
  common = dict(name='split_cifar100' if subset is None else f'split_cifar100[{classes}]', num_classes=num_classes,
                class_names=sources.LazyNames(data, 'cifar100', num_classes,
                                              subset=None if subset is None else subset.tolist()),
                eval_names=names, eval_parts=evals, mask=mask, epochs=epochs, preprocess=preprocess)
  per_task = limits.max_train_examples_per_task
  if joint:
    every = tuple(sorted(c for g in groups for c in g))
    limit = None if per_task is None else per_task * len(groups)
    return segmented.JointBenchmark(
        tasks=[benchmark.Task(index=0, name='joint', classes=every)],
        train_parts=[functools.partial(part, 0, classes=every, limit=limit, seed=seed)], **common)
  return segmented.SegmentedBenchmark(
      tasks=[benchmark.Task(index=t, name=names[t], classes=g) for t, g in enumerate(groups)],
      train_parts=[functools.partial(part, 0, classes=g, limit=per_task, seed=seed + t) for t, g in enumerate(groups)],
      scenario='class_incremental', **common)


def gaussian_cifar100(*, num_episodes: int = 200, sigma: float = 10.0, eval_every_episodes: int = 20,
                      steps_per_episode: Optional[int] = None, repeat_episodes: bool = False,
                      class_order: str = 'label', order_seed: Optional[int] = None, mask: str = 'class',
                      epochs: Union[int, float] = 1, seed: int = 0, limits: Limits = Limits(),
                      preprocess: PreprocessConfig = PreprocessConfig(), data_dir: Optional[str] = None,
                      manual_dir: Optional[str] = None) -> gaussian.GaussianBenchmark:
  """Gaussian-scheduled CIFAR-100 (task-agnostic); the math is in the comment above `gaussian_class_weights`.

  Args:
    num_episodes: E (default 200, official).
    sigma: Gaussian width in episodes (default 10 = the official 50 batches at 5 batches per episode).
    eval_every_episodes: K; one evaluation segment ("task") per K episodes (default 20: ten evaluations).
    steps_per_episode: S; None derives it from the data (single pass; 5 with repeat_episodes).
    repeat_episodes: official code's behaviour (episodes draw from all examples of their classes, with reuse).
    class_order: which class peaks first: 'label' or 'random' (seeded by `order_seed`).
    order_seed: seed of the random class order (defaults to `seed`).
    mask: 'class' (logits restricted to the episode's classes) or 'none'.
    epochs: passes over the training set in single-pass mode (default 1: every example seen once).
    seed: seed of the schedule's Bernoulli draws (and the class order default, example caps).
    limits: example caps (tiny runs): the first `max_tasks` evaluation segments, a training pool of
      `max_train_examples_per_task` examples per segment, a capped test set.
    preprocess: image options (network input side, JPEG round trip before the random crop).
    data_dir: tfds data directory.
    manual_dir: local downloads.

  Returns:
    The benchmark.

  Raises:
    ValueError: an unknown class order or mask, a non-positive sigma, episode count or cap.
  """
  order = benchmark.make_class_order(100, class_order, seed=seed if order_seed is None else order_seed)
  episodes = gaussian.gaussian_schedule(num_classes=100, num_episodes=num_episodes, sigma=sigma, seed=seed,
                                        order=order)
  data = sources.Data(data_dir, manual_dir)
  num_segments = math.ceil(num_episodes / eval_every_episodes)
  per_task = limits.max_train_examples_per_task
  pool_limit = None if per_task is None else per_task * num_segments
  return gaussian.GaussianBenchmark(
      name='gaussian_cifar100', num_classes=100, class_names=sources.LazyNames(data, 'cifar100', 100),
      train_part=functools.partial(sources.array_part, data, 'cifar100', 0, limit=pool_limit, seed=seed),
      eval_part=functools.partial(sources.array_part, data, 'cifar100', 1, limit=limits.max_eval_examples_per_task,
                                  seed=seed),
      episodes=episodes, eval_every_episodes=eval_every_episodes, steps_per_episode=steps_per_episode,
      repeat_episodes=repeat_episodes, mask=mask, max_tasks=limits.max_tasks, epochs=epochs, preprocess=preprocess)


def five_datasets(*, datasets: Sequence[str] = FIVE_DATASETS, mask: str = 'class', epochs: Union[int, float] = 5,
                  seed: int = 0, limits: Limits = Limits(), preprocess: PreprocessConfig = PreprocessConfig(),
                  data_dir: Optional[str] = None,
                  manual_dir: Optional[str] = None) -> segmented.SegmentedBenchmark:
  """5-datasets: one class-incremental task per data set, 10 classes each, labels offset by 10 per task.

  Grayscale data sets (MNIST, notMNIST, Fashion-MNIST) are turned into RGB and, like the 32x32 ones, resized to the
  network input by the shared preprocessing.

  Args:
    datasets: the data sets in task order (default CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST, the official order).
    mask: 'class' or 'none'.
    epochs: passes over each task.
    seed: seed of the example caps.
    limits: example caps (tiny runs): the first `max_tasks` tasks, a seeded random cap per task and per evaluation
      set.
    preprocess: image options (network input side, JPEG round trip before the random crop).
    data_dir: tfds data directory.
    manual_dir: local downloads (see docs/data.md for the folder of each data set).

  Returns:
    The benchmark.

  Raises:
    ValueError: on an unknown data set name.
  """
  datasets = tuple(datasets)
  for name in datasets:
    benchmark.check_choice('dataset', name, FIVE_DATASETS)
  datasets = datasets[:_limit_tasks(len(datasets), limits.max_tasks)]
  data = sources.Data(data_dir, manual_dir)
  tasks = [benchmark.Task(index=t, name=n, classes=tuple(range(10 * t, 10 * t + 10))) for t, n in enumerate(datasets)]

  def parts(split_index: int, limit: Optional[int]) -> list:
    return [functools.partial(sources.array_part, data, n, split_index, offset=10 * t, limit=limit, seed=seed + t)
            for t, n in enumerate(datasets)]

  return segmented.SegmentedBenchmark(
      name='five_datasets', num_classes=10 * len(datasets),
      class_names=sources.LazyNames(data, list(datasets), 10 * len(datasets)), tasks=tasks,
      scenario='class_incremental', eval_names=list(datasets), train_parts=parts(0, limits.max_train_examples_per_task),
      eval_parts=parts(1, limits.max_eval_examples_per_task), mask=mask, epochs=epochs, preprocess=preprocess)


FOUR_DOMAINS = ('cifar100_0-9', 'mnist', 'not_mnist', 'fashion_mnist')
_FOUR_DOMAIN_NAMES = {
    'cifar100_0-9': ('apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle'),
    'mnist': tuple(str(d) for d in range(10)),
    'not_mnist': tuple('ABCDEFGHIJ'),
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                      'Ankle boot'),
}


def sample_split_part(data: sources.Data, name: str, split_index: int, *, offset: int, test_fraction: float,
                      split_seed: int, limit: Optional[int] = None, seed: int = 0) -> sources.ArrayPart:
  """One side of a seeded train / test split of a data set's `test` split (notMNIST's 10,000-image sample):
  a permutation drawn with `np.random.default_rng(split_seed)`; its last round(n * test_fraction) rows are the test
  side (split_index 1), the others the training side (0)."""
  images, labels = data.arrays(name, 'test')
  perm = np.random.default_rng(split_seed).permutation(len(labels))
  cut = len(labels) - int(round(len(labels) * test_fraction))
  rows = np.sort(perm[:cut] if split_index == 0 else perm[cut:]).astype(np.int64)
  return sources.ArrayPart(images=images, labels=np.asarray(labels, np.int64) + offset,
                           indices=sources.subsample(rows, limit, seed=seed))


def four_domains(*, notmnist_test_fraction: float = 0.2, notmnist_split_seed: int = 0, mask: str = 'class',
                 epochs: Union[int, float] = 5, seed: int = 0, joint: bool = False, limits: Limits = Limits(),
                 preprocess: PreprocessConfig = PreprocessConfig(), data_dir: Optional[str] = None,
                 manual_dir: Optional[str] = None) -> segmented.SegmentedBenchmark:
  """Four domains, class-incremental: CIFAR-100 classes 0-9, MNIST, notMNIST, Fashion-MNIST; 10 classes each,
  labels offset by 10 per task (40 in all). Every image goes to the network input side (32 px: MNIST-style 28 px
  glyphs are padded, grayscale turned into RGB).

  notMNIST's 10,000-image sample is split into training and test images with a fixed seed
  (`sample_split_part`: `notmnist_test_fraction` of it, drawn with `notmnist_split_seed`), whether or not a notMNIST
  training set is present. The other data sets use their official splits.

  Args:
    notmnist_test_fraction: share of the notMNIST sample held out for testing (0 < f < 1).
    notmnist_split_seed: seed of that split.
    joint: the joint-training upper bound: one training segment holding every domain's training images (each
      capped as its task would be; `sources.concat_array_parts` brings them to one geometry, which the pipeline
      turns into the same inputs), evaluated on every domain's test set.
    mask, epochs, seed, limits, preprocess, data_dir, manual_dir: as `five_datasets`.

  Raises:
    ValueError: a test fraction outside (0, 1).
  """
  if not 0.0 < notmnist_test_fraction < 1.0:
    raise ValueError(f'notmnist_test_fraction must be in (0, 1), got {notmnist_test_fraction!r}')
  names = FOUR_DOMAINS[:_limit_tasks(len(FOUR_DOMAINS), limits.max_tasks)]
  data = sources.Data(data_dir, manual_dir)
  tasks = [benchmark.Task(index=t, name=n, classes=tuple(range(10 * t, 10 * t + 10))) for t, n in enumerate(names)]

  def part(t: int, name: str, split_index: int, limit: Optional[int]):
    if name == 'not_mnist':
      return functools.partial(sample_split_part, data, name, split_index, offset=10 * t,
                               test_fraction=notmnist_test_fraction, split_seed=notmnist_split_seed, limit=limit,
                               seed=seed + t)
    source, classes = ('cifar100', tuple(range(10))) if name == 'cifar100_0-9' else (name, None)
    return functools.partial(sources.array_part, data, source, split_index, classes=classes, offset=10 * t,
                             limit=limit, seed=seed + t)

  train_parts = [part(t, n, 0, limits.max_train_examples_per_task) for t, n in enumerate(names)]
  common = dict(name='four_domains', num_classes=10 * len(names),
                class_names=[f'{n}/{c}' for n in names for c in _FOUR_DOMAIN_NAMES[n]], eval_names=list(names),
                eval_parts=[part(t, n, 1, limits.max_eval_examples_per_task) for t, n in enumerate(names)],
                mask=mask, epochs=epochs, preprocess=preprocess)
  if joint:
    every = tuple(c for task in tasks for c in task.classes)
    return segmented.JointBenchmark(
        tasks=[benchmark.Task(index=0, name='joint', classes=every)],
        train_parts=[lambda: sources.concat_array_parts([p() for p in train_parts])], **common)
  return segmented.SegmentedBenchmark(tasks=tasks, train_parts=train_parts, scenario='class_incremental', **common)


def domainnet(*, protocol: str = 'domain_incremental', domains: Sequence[str] = DOMAINNET_DOMAINS,
              num_tasks: int = 5, class_order: str = 'label', order_seed: Optional[int] = None,
              mask: Optional[str] = None, epochs: Union[int, float] = 5, seed: int = 0, shuffle_buffer: int = 10_000,
              limits: Limits = Limits(), preprocess: PreprocessConfig = PreprocessConfig(),
              data_dir: Optional[str] = None, manual_dir: Optional[str] = None) -> segmented.SegmentedBenchmark:
  """DomainNet (builder `domainnet_continual`, protocol in datasets/domainnet/README.md).

  Args:
    protocol: 'domain_incremental' (one task per domain, all 345 classes, no mask) or 'class_incremental'
      (domains pooled, 345 classes split into `num_tasks` tasks, class mask).
    domains: domains in task order (domain-incremental) or pooled (class-incremental).
    num_tasks: tasks of the class-incremental protocol (must divide 345: 3, 5, 15, 23, ...).
    class_order: 'label' or 'random' (class-incremental).
    order_seed: seed of the random class order (defaults to `seed`).
    mask: 'class' or 'none'; default 'none' for domain-incremental, 'class' for class-incremental.
    epochs: passes over each task.
    seed: the benchmark's own seed.
    shuffle_buffer: shuffle buffer (encoded images) of the streamed training data.
    limits: example caps (tiny runs): the first `max_tasks` tasks; per task and per evaluation set, the first
      examples in tfds's shuffled file order.
    preprocess: image options (network input side, JPEG round trip before the random crop).
    data_dir: tfds data directory.
    manual_dir: folder with the official archives and split lists.

  Returns:
    The benchmark.

  Raises:
    ValueError: on an unknown protocol or domain.
  """
  benchmark.check_choice('protocol', protocol, DOMAINNET_PROTOCOLS)
  for d in domains:
    benchmark.check_choice('domain', d, DOMAINNET_DOMAINS)
  data = sources.Data(data_dir, manual_dir)
  name = sources.DOMAINNET
  num_classes = 345

  def stream_part(split: str, limit: Optional[int], classes=None) -> sources.StreamPart:
    builder = data.builder(name)
    if classes is None:
      n = sum(builder.info.splits[s].num_examples for s in split.split('+'))
    else:
      n = int(data.label_counts(name, split, num_classes)[list(classes)].sum())
    n = n if limit is None else min(n, limit)
    return sources.StreamPart(builder=builder, split=split, num_examples=n,
                              classes=None if classes is None else np.asarray(classes), max_examples=limit)

  max_train, max_eval = limits.max_train_examples_per_task, limits.max_eval_examples_per_task
  if protocol == 'domain_incremental':
    domains = tuple(domains)[:_limit_tasks(len(domains), limits.max_tasks)]
    tasks = [benchmark.Task(index=t, name=d, classes=tuple(range(num_classes))) for t, d in enumerate(domains)]
    train = [functools.partial(stream_part, f'{d}_train', max_train) for d in domains]
    evals = [functools.partial(stream_part, f'{d}_test', max_eval) for d in domains]
    scenario, mask = 'domain_incremental', mask or 'none'
  else:
    order = benchmark.make_class_order(num_classes, class_order, seed=seed if order_seed is None else order_seed)
    groups = benchmark.split_classes(order, num_tasks)[:_limit_tasks(num_tasks, limits.max_tasks)]
    tasks = [benchmark.Task(index=t, name=f'task_{t}', classes=g) for t, g in enumerate(groups)]
    train_split = '+'.join(f'{d}_train' for d in domains)
    test_split = '+'.join(f'{d}_test' for d in domains)
    train = [functools.partial(stream_part, train_split, max_train, g) for g in groups]
    evals = [functools.partial(stream_part, test_split, max_eval, g) for g in groups]
    scenario, mask = 'class_incremental', mask or 'class'
  return segmented.SegmentedBenchmark(
      name=f'domainnet_{protocol}', num_classes=num_classes, class_names=sources.LazyNames(data, name, num_classes),
      tasks=tasks, scenario=scenario, eval_names=[t.name for t in tasks], train_parts=train, eval_parts=evals,
      mask=mask, shuffle_buffer=shuffle_buffer, epochs=epochs, preprocess=preprocess)


def split_imagenet_r(*, num_tasks: int = 10, class_order: str = 'label', order_seed: Optional[int] = None,
                     train_fraction: int = 80, epochs: Union[int, float] = 50, seed: int = 0,
                     shuffle_buffer: int = 10_000, limits: Limits = Limits(),
                     preprocess: PreprocessConfig = PreprocessConfig(), data_dir: Optional[str] = None,
                     manual_dir: Optional[str] = None) -> segmented.SegmentedBenchmark:
  """Split ImageNet-R (builder `imagenet_r_local`): class-incremental, the l2p/DualPrompt protocol.

  The one tfds split is cut in record order: `test[:train_fraction%]` trains and `test[train_fraction%:]` tests
  (24,000 / 6,000 images at 80); labels 0..199 in ascending wnid order; task t = classes [t 200/T, (t+1) 200/T).

  Args:
    num_tasks: T (must divide 200).
    class_order: 'label' (the official order) or 'random'.
    order_seed: seed of the random class order (defaults to `seed`).
    train_fraction: percent of the records that train.
    epochs: passes over each task (official DualPrompt: 50).
    seed: the benchmark's own seed.
    shuffle_buffer: shuffle buffer (encoded images) of the streamed training data.
    limits: example caps (tiny runs).
    preprocess: image options.
    data_dir: tfds data directory.
    manual_dir: folder with imagenet-r.tar.

  Returns:
    The benchmark.

  Raises:
    ValueError: a fraction outside (0, 100).
  """
  if not 0 < train_fraction < 100:
    raise ValueError(f'train_fraction={train_fraction} must be a percentage strictly between 0 and 100.')
  data = sources.Data(data_dir, manual_dir)
  name, num_classes = sources.IMAGENET_R, 200

  def stream_part(split: str, limit: Optional[int], classes) -> sources.StreamPart:
    n = int(data.label_counts(name, split, num_classes)[list(classes)].sum())
    n = n if limit is None else min(n, limit)
    return sources.StreamPart(builder=data.builder(name), split=split, num_examples=n, classes=np.asarray(classes),
                              max_examples=limit)

  order = benchmark.make_class_order(num_classes, class_order, seed=seed if order_seed is None else order_seed)
  groups = benchmark.split_classes(order, num_tasks)[:_limit_tasks(num_tasks, limits.max_tasks)]
  tasks = [benchmark.Task(index=t, name=f'task_{t}', classes=g) for t, g in enumerate(groups)]
  train = [functools.partial(stream_part, f'test[:{train_fraction}%]', limits.max_train_examples_per_task, g)
           for g in groups]
  evals = [functools.partial(stream_part, f'test[{train_fraction}%:]', limits.max_eval_examples_per_task, g)
           for g in groups]
  return segmented.SegmentedBenchmark(
      name='split_imagenet_r', num_classes=num_classes, class_names=sources.LazyNames(data, name, num_classes),
      tasks=tasks, scenario='class_incremental', eval_names=[t.name for t in tasks], train_parts=train,
      eval_parts=evals, mask='class', shuffle_buffer=shuffle_buffer, epochs=epochs, preprocess=preprocess)


CORE50_TRAIN_SESSIONS = ('s1', 's2', 's4', 's5', 's6', 's8', 's9', 's11')
CORE50_TEST_SESSIONS = ('s3', 's7', 's10')


def core50(*, train_sessions: Sequence[str] = CORE50_TRAIN_SESSIONS,
           test_sessions: Sequence[str] = CORE50_TEST_SESSIONS, mask: str = 'none', epochs: Union[int, float] = 5,
           seed: int = 0, shuffle_buffer: int = 10_000, limits: Limits = Limits(),
           preprocess: PreprocessConfig = PreprocessConfig(), data_dir: Optional[str] = None,
           manual_dir: Optional[str] = None) -> segmented.CommonTestBenchmark:
  """CORe50 (builder `core50_local`): domain-incremental, the l2p protocol (configs/core50_l2p.py).

  One task per training session (all 50 objects, no class mask: `train_mask = False`), evaluated after every task
  on one common test set, the union of `test_sessions`.

  Args:
    train_sessions: sessions in task order.
    test_sessions: sessions of the common test set.
    mask: 'none' (official) or 'class' (no effect: every task has every class).
    epochs: passes over each task.
    seed: the benchmark's own seed.
    shuffle_buffer: shuffle buffer (encoded images) of the streamed training data.
    limits: example caps (tiny runs).
    preprocess: image options.
    data_dir: tfds data directory.
    manual_dir: folder with core50_128x128.zip.

  Returns:
    The benchmark.

  Raises:
    ValueError: an unknown session, or a session both trained and tested on.
  """
  sessions = tuple(f's{i}' for i in range(1, 12))
  for s in tuple(train_sessions) + tuple(test_sessions):
    benchmark.check_choice('session', s, sessions)
  if set(train_sessions) & set(test_sessions):
    raise ValueError(f'sessions {sorted(set(train_sessions) & set(test_sessions))} are both trained and tested on')
  data = sources.Data(data_dir, manual_dir)
  name, num_classes = sources.CORE50, 50

  def stream_part(split: str, limit: Optional[int]) -> sources.StreamPart:
    builder = data.builder(name)
    n = sum(builder.info.splits[s].num_examples for s in split.split('+'))
    return sources.StreamPart(builder=builder, split=split, num_examples=n if limit is None else min(n, limit),
                              max_examples=limit)

  sessions = tuple(train_sessions)[:_limit_tasks(len(train_sessions), limits.max_tasks)]
  tasks = [benchmark.Task(index=t, name=s, classes=tuple(range(num_classes))) for t, s in enumerate(sessions)]
  train = [functools.partial(stream_part, s, limits.max_train_examples_per_task) for s in sessions]
  evals = [functools.partial(stream_part, '+'.join(test_sessions), limits.max_eval_examples_per_task)]
  return segmented.CommonTestBenchmark(
      name='core50', num_classes=num_classes, class_names=sources.LazyNames(data, name, num_classes), tasks=tasks,
      eval_names=['test'], train_parts=train, eval_parts=evals, mask=mask, shuffle_buffer=shuffle_buffer,
      epochs=epochs, preprocess=preprocess)
