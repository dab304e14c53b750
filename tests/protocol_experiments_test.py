"""The method rows of the two ViT-mini protocols (experiments/cifar100_disjoint_*.gin, experiments/four_domains_*.gin)
build at their real size, and each uses its protocol's data and budget exactly as the L2P experiment of that
protocol, so the rows of docs/results.md compare."""

import pathlib

import gin
import pytest

from l2p_tf import gin_utils
from l2p_tf.engine import config
from l2p_tf.engine import experiment as experiment_lib
from tests import test_util
from tests.runs import one_device

EXPERIMENTS_DIR = pathlib.Path(test_util.REPO_ROOT) / 'gin_configs' / 'experiments'
PROTOCOLS = {'cifar100_disjoint': 'cifar100_disjoint_l2p', 'four_domains': 'four_domains_l2p'}
METHOD_ROWS = sorted(p.stem for p in EXPERIMENTS_DIR.glob('*.gin')
                     if p.stem.startswith(tuple(PROTOCOLS)) and p.stem not in PROTOCOLS.values())


def protocol_of(experiment):
  return next(reference for prefix, reference in PROTOCOLS.items() if experiment.startswith(prefix))


def build(experiment):
  """Parses one experiment file alone (no local_tiny) and builds it; returns (built, eval batch, operative bindings)."""
  gin_utils.parse([f'experiments/{experiment}.gin'], [])
  try:
    spec = gin.get_configurable(experiment_lib.Experiment)()
    training = gin.get_configurable(config.Training)()
    evaluation = gin.get_configurable(config.Evaluation)()
    built = experiment_lib.build(spec, training, strategy=one_device())
    macros = {name: gin.query_parameter(f'%{name}') for name in ('GLOBAL_BATCH_SIZE', 'EPOCHS', 'IMAGE_SIZE',
                                                                  'INIT_CHECKPOINT')}
  finally:
    gin.clear_config()
  return built, evaluation.batch_size, macros


def test_every_protocol_has_method_rows():
  assert {'cifar100_disjoint_dualprompt', 'cifar100_disjoint_coda_prompt', 'cifar100_disjoint_l2p_plus_plus',
          'four_domains_dualprompt', 'four_domains_coda_prompt', 'four_domains_l2p_plus_plus'} <= set(METHOD_ROWS)


@pytest.mark.parametrize('experiment', METHOD_ROWS)
def test_method_row_builds_on_the_protocol_of_its_l2p_row(experiment):
  built, eval_batch, macros = build(experiment)
  reference, reference_eval_batch, reference_macros = build(protocol_of(experiment))
  # The same budget, backbone file and input side as the L2P row of the protocol.
  assert macros == reference_macros
  assert eval_batch == reference_eval_batch
  # The same benchmark: tasks, their classes and evaluation sets.
  bench, ref = built.benchmark, reference.benchmark
  assert (bench.name, bench.num_classes, bench.eval_names) == (ref.name, ref.num_classes, ref.eval_names)
  assert [t.classes for t in bench.tasks] == [t.classes for t in ref.tasks]
  # The full-size ViT-mini, and the method accepts the evaluation batch (vote groups) as the loop will check it.
  assert built.method.backbone.variant == 'mini' and built.method.backbone.config.num_layers == 4
  experiment_lib.check_batch('eval_batch_size', eval_batch, built.strategy, built.method)
