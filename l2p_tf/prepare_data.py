r"""Prepares every tfds dataset an experiment reads, into one --tfds_data_dir (local or gs://), before any training.

  python -m l2p_tf.prepare_data --gin_file=gin_configs/experiments/five_datasets_l2p.gin \
      --tfds_data_dir=gs://BUCKET/tfds [--tfds_manual_dir=DIR] [--gin_file=... --gin_bindings=...]
  python -m l2p_tf.prepare_data --datasets=cifar100,domainnet_continual --tfds_data_dir=DIR [--tfds_manual_dir=DIR]

The datasets come from the experiment's gin files (the benchmark bound to `experiment.Experiment.benchmark`: a
continual benchmark, or the `dataset` of a pretraining config's `pretraining.pretraining`), or from --datasets. Each
is prepared exactly as a run would prepare it (`l2p_tf.data.sources.get_builder`, which calls the builder's `download_and_prepare` directly: no Apache Beam,
unlike `tfds build`): with --tfds_manual_dir, the local-file builders read the standard downloads from that folder
(no network); otherwise tfds downloads. A run given the same --tfds_data_dir then reads the prepared data and
downloads nothing, with or without --tfds_manual_dir. Without network and without the files, each dataset fails in
seconds with one `error:` line saying which files to place where (exit code 2).

`--register_checksums` (with network) downloads a dataset whose checksums this repository does not record yet
(DomainNet) and records them in its `checksums.tsv`.
"""

from __future__ import annotations

import inspect
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import flags

import l2p_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

FLAGS = flags.FLAGS

# The tfds datasets each benchmark factory reads (by the factory's name, wherever its module lives); five_datasets
# reads its `datasets` argument.
BENCHMARK_DATASETS = {
    'split_cifar100': ('cifar100',),
    'gaussian_cifar100': ('cifar100',),
    'domainnet': ('domainnet_continual',),
    'split_imagenet_r': ('imagenet_r_local',),
    'core50': ('core50_local',),
}


def define_flags() -> None:
  """Defines the command-line flags (called by the entry points only, so importing this module defines none)."""
  flags.DEFINE_multi_string('gin_file', [], "The experiment's gin files, as given to l2p_tf.main.")
  flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings, as given to l2p_tf.main.')
  flags.DEFINE_multi_string('gin_search_paths', [], 'Extra directories to look for gin files and includes in.')
  flags.DEFINE_list('datasets', [], 'tfds names to prepare instead of (or besides) those of --gin_file, e.g. '
                    'cifar100,mnist,domainnet_continual.')
  flags.DEFINE_string('tfds_data_dir', None, 'Where to write the prepared data (local or gs://); default: '
                      '$TFDS_DATA_DIR, else tfds\'s own default.')
  flags.DEFINE_string('tfds_manual_dir', None, 'Directory with the standard downloads (as l2p_tf.main); without '
                      'it, tfds downloads.')
  flags.DEFINE_bool('register_checksums', False, 'Download and record the checksums of datasets that have none '
                    'recorded yet (needs network).')


def datasets_of_benchmark(fn_name: str, bound: dict, fn=None) -> list[str]:
  """The tfds datasets a benchmark factory reads, from its name and its gin-bound arguments.

  Args:
    fn_name: the factory's name (`split_cifar100`, `five_datasets`, `pretraining`, ...).
    bound: its gin bindings (`datasets`, `dataset`), plus `max_tasks` from the example caps (`benchmarks.Limits`).
    fn: the factory itself (for the default of `datasets` / `dataset`).

  Raises:
    ValueError: the benchmark is not one this module knows.
  """
  if fn_name in BENCHMARK_DATASETS:
    return list(BENCHMARK_DATASETS[fn_name])
  if fn_name == 'pretraining':
    name = bound.get('dataset')
    if name is None and fn is not None:
      name = inspect.signature(fn).parameters['dataset'].default
    return [name]
  if fn_name == 'five_datasets':
    names = bound.get('datasets')
    if names is None and fn is not None:
      names = inspect.signature(fn).parameters['datasets'].default
    names = list(names)
    max_tasks = bound.get('max_tasks')
    return names[:max_tasks] if max_tasks else names
  raise ValueError(f'cannot tell which datasets benchmark {fn_name!r} reads; name them with --datasets.')


def datasets_from_gin() -> list[str]:
  """The datasets of the parsed gin config's benchmark (`experiment.Experiment.benchmark`).

  Raises:
    ValueError: the config binds no benchmark.
  """
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  bindings = gin_config._CONFIG  # pylint: disable=protected-access  (gin has no public view of the bindings)
  for (_, selector), params in bindings.items():
    if selector.rsplit('.', 1)[-1] == 'Experiment' and 'benchmark' in params:
      ref = params['benchmark']
      configurable = getattr(ref, 'configurable', None)
      if configurable is None:
        raise ValueError(f'{selector}.benchmark is {ref!r}, not a benchmark reference (e.g. '
                         '@benchmarks.split_cifar100).')
      fn = configurable.wrapped
      bound = dict(bindings.get(('', configurable.selector), {}))
      limits = bindings.get(('', configurable.selector.rsplit('.', 1)[0] + '.Limits'), {})
      bound.setdefault('max_tasks', limits.get('max_tasks'))
      return datasets_of_benchmark(fn.__name__, bound, fn)
  raise ValueError('the gin files bind no benchmark (experiment.Experiment.benchmark); give an experiment\'s gin '
                   'files or --datasets.')


def prepare(names: Sequence[str], *, data_dir: Optional[str], manual_dir: Optional[str],
            register_checksums: bool = False) -> list[str]:
  """Prepares each dataset (a no-op for one already prepared); returns one summary line per dataset.

  Raises:
    ValueError: an unknown dataset name.
    RuntimeError: a dataset cannot be prepared; the message says which files to place where.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from l2p_tf.data import sources  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or sources.default_data_dir()
  lines, errors = [], []
  for name in names:
    start = time.perf_counter()
    try:
      if register_checksums:
        builder = sources.get_builder(name, data_dir=data_dir, manual_dir=manual_dir, prepare=False)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, register_checksums=True))
      else:
        builder = sources.get_builder(name, data_dir=data_dir, manual_dir=manual_dir, prepare=True)
    except RuntimeError as e:  # Go on with the others: one run of this command reports every missing dataset.
      errors.append(str(e))
      continue
    splits = ', '.join(f'{s} {info.num_examples:,}' for s, info in sorted(builder.info.splits.items()))
    lines.append(f'{name}: {builder.name} {builder.version} in {builder.data_dir} ({splits}; '
                 f'{time.perf_counter() - start:.1f}s)')
    print(f'ready: {lines[-1]}', flush=True)
  if errors:
    raise RuntimeError('\nerror: '.join(errors))
  return lines


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.install(None, 'prepare_data', verbosity_given=FLAGS['verbosity'].present)
  from l2p_tf import gin_utils  # pylint: disable=g-import-not-at-top
  names = list(FLAGS.datasets)
  try:
    if FLAGS.gin_file:
      gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
      gin_utils.check_macros()
      names += [n for n in datasets_from_gin() if n not in names]
    if not names:
      raise ValueError('nothing to prepare: give the experiment\'s --gin_file (e.g. '
                       '--gin_file=gin_configs/experiments/cifar100_l2p.gin) or --datasets.')
    print(f'Preparing {", ".join(names)} in {FLAGS.tfds_data_dir or "the default tfds data directory"}'
          + (f' from {FLAGS.tfds_manual_dir}' if FLAGS.tfds_manual_dir else '') + '.', flush=True)
    prepare(names, data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir,
            register_checksums=FLAGS.register_checksums)
  except (ValueError, RuntimeError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


def run() -> None:
  """The command-line entry point (`python -m l2p_tf.prepare_data`, `l2p-prepare-data`)."""
  from l2p_tf import quiet  # pylint: disable=g-import-not-at-top
  quiet.filter_stderr()  # Drops the C++ absl logger's chatter (l2p_tf/quiet.py).
  define_flags()
  app.run(main)


if __name__ == '__main__':
  run()
