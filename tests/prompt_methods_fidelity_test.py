"""The DualPrompt and CORe50 presets bind the official values (configs/cifar100_dualprompt.py, imr_dualprompt.py and
core50_l2p.py of google-research/l2p); the benchmark and the prompt pool are built from the parsed gin (no data is
read, no ViT is built)."""

import gin
import pytest

from l2p_tf import gin_utils
from l2p_tf.engine import experiment  # pylint: disable=unused-import  # The module the gin files bind.

DUALPROMPT = {
    'cifar100_dualprompt': {'lr': 0.03, 'epochs': 5, 'tasks': 10, 'classes_per_task': 10, 'e_length': 5,
                            'batchwise': True},
    'imagenet_r_dualprompt': {'lr': 0.005, 'epochs': 50, 'tasks': 10, 'classes_per_task': 20, 'e_length': 20,
                              'batchwise': False},
}


def _value(key):
  v = gin.query_parameter(key)
  text = str(v)
  return gin.query_parameter(text) if text.startswith('%') else v


@pytest.fixture
def parsed():
  def parse(name):
    gin_utils.parse([f'experiments/{name}.gin'])
  yield parse
  gin.clear_config()


def _common_run_values():
  assert _value('optimizers.build_optimizer.scale_by_batch') is True
  assert _value('optimizers.build_optimizer.schedule') == 'constant'
  assert _value('config.Training.grad_clip_norm') == 1.0
  assert _value('config.Training.grad_clip_scope') == 'all'
  assert _value('config.Training.reset_optimizer_per_task') is True
  assert _value('experiment.Experiment.seed') == 42
  assert _value('vit.VisionTransformer.variant') == 'B/16'


@pytest.mark.parametrize('name', sorted(DUALPROMPT))
def test_dualprompt_presets_bind_the_official_values(parsed, name):
  parsed(name)
  official = DUALPROMPT[name]
  bench = gin.query_parameter('experiment.Experiment.benchmark').scoped_configurable_fn()
  assert len(bench.tasks) == official['tasks'] and bench.epochs == official['epochs']
  assert all(len(t.classes) == official['classes_per_task'] for t in bench.tasks) and bench.mask == 'class'
  assert bench.preprocess.image_size == 224
  # G-prompt at layers 0-1 (5 tokens per half), E-prompts at 2-4, prefix tuning, [CLS] head (prefixes add no token).
  assert tuple(_value('dualprompt_model.DualPromptModel.g_layers')) == (0, 1)
  assert _value('dualprompt_model.DualPromptModel.g_length') == 5
  assert tuple(_value('dualprompt_model.DualPromptModel.e_layers')) == (2, 3, 4)
  assert _value('dualprompt_model.DualPromptModel.e_length') == official['e_length']
  assert _value('dualprompt_model.DualPromptModel.prefix_tune') is True
  assert _value('dualprompt_model.DualPromptModel.g_init') == 'uniform'
  pool = gin.query_parameter('dualprompt.DualPrompt.prompt_pool').scoped_configurable_fn(
      embed_dim=8, num_tasks=len(bench.tasks), prompt_length=3 * 2 * official['e_length'])
  assert (pool.pool_size, pool.top_k) == (10, 1)
  assert pool.diversity == 'task_mask' and pool.shared_prompt_pool and pool.use_key  # use_prompt_mask, shared pool
  assert (pool.selection == 'batchwise') == official['batchwise'] and pool.vote_size == 24
  assert _value('dualprompt.DualPrompt.pull_coefficient') == 1.0
  assert _value('dualprompt.DualPrompt.use_label_mask') is True  # train_mask
  assert _value('config.Training.global_batch_size') == 192  # 24 per device x 8
  assert _value('optimizers.build_optimizer.base_learning_rate') == official['lr']
  assert _value('optimizers.build_optimizer.name') == 'adam'
  _common_run_values()
  if not official['batchwise']:
    assert _value('config.Evaluation.primary') == 'per_sample'


def test_core50_preset_binds_the_official_values(parsed):
  parsed('core50_l2p')
  bench = gin.query_parameter('experiment.Experiment.benchmark').scoped_configurable_fn()
  assert [t.name for t in bench.tasks] == ['s1', 's2', 's4', 's5', 's6', 's8', 's9', 's11']
  assert all(t.classes == tuple(range(50)) for t in bench.tasks) and bench.mask == 'none' and bench.epochs == 5
  pool = gin.query_parameter('l2p.L2P.prompt_pool').scoped_configurable_fn(embed_dim=8, num_tasks=8)
  assert (pool.pool_size, pool.prompt_length, pool.top_k) == (10, 5, 4)
  assert pool.diversity == 'none' and not pool.shared_prompt_pool
  assert pool.selection == 'batchwise' and pool.vote_size == 16
  assert _value('l2p.L2P.use_label_mask') is False  # train_mask = False
  assert _value('l2p.L2P.pull_coefficient') == 1.0
  assert _value('l2p_model.L2PModel.train_backbone') is True  # freeze_part = []
  assert _value('l2p_model.L2PModel.head_type') == 'prompt'
  assert _value('config.Training.global_batch_size') == 128  # 16 per device x 8
  assert _value('optimizers.build_optimizer.name') == 'sgd'
  assert _value('optimizers.build_optimizer.base_learning_rate') == 0.03
  _common_run_values()
