"""The official presets bind the official values (docs/fidelity.md), and that page names every official key.

Each experiment gin is parsed as a run would parse it; the benchmark and the prompt pool are built from it (no data is
read, no ViT is built) and their resolved settings compared with the official config's.
"""

import os
import re

import gin
import pytest

from l2p_tf import gin_utils
from l2p_tf.data import preprocessing
from l2p_tf.engine import experiment  # pylint: disable=unused-import  # The module the gin files bind.
from tests import test_util

# Values of the official configs/cifar100_l2p.py, cifar100_gaussian_l2p.py and five_datasets_l2p.py that have a
# binding here: (experiment, {official key: official value}).
OFFICIAL = {
    'cifar100_l2p': {'pool_size': 10, 'length': 10, 'top_k': 4, 'use_prompt_mask': False,
                     'shared_prompt_pool': False, 'pull_constraint_coeff': 1.0, 'reinit_optimizer': True},
    'cifar100_gaussian_l2p': {'pool_size': 10, 'length': 10, 'top_k': 4, 'use_prompt_mask': False,
                              'shared_prompt_pool': False, 'pull_constraint_coeff': 1.0, 'reinit_optimizer': False},
    'five_datasets_l2p': {'pool_size': 20, 'length': 10, 'top_k': 4, 'use_prompt_mask': True,
                          'shared_prompt_pool': True, 'pull_constraint_coeff': 0.5, 'reinit_optimizer': True},
}

# Every key of the three official configs (names as the official code spells them).
OFFICIAL_KEYS = (
    'model_name', 'per_device_batch_size', 'dataset', 'gaussian_schedule', 'gaussian_mode', 'offline_eval',
    'recreate_eval', 'reinit_optimizer', 'eval_last_only', 'save_last_ckpt_only', 'learning_rate', 'optim',
    'sgd_momentum', 'grad_clip_max_norm', 'learning_rate_schedule', 'warmup_epochs', 'weight_decay', 'num_epochs',
    'num_eval_steps', 'eval_pad_last_batch', 'log_loss_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
    'shuffle_buffer_size', 'seed', 'trial', 'input_size', 'resize_size', 'model_config', 'init_checkpoint',
    'continual.num_tasks', 'continual.num_classes_per_task', 'continual.rand_seed',
    'continual.num_train_steps_per_task', 'continual.train_mask', 'continual.eval_task_inc', 'norm_pre_logits',
    'weight_norm', 'temperature', 'norm_01', 'reverse_task', 'use_cls_token', 'task_specific_cls_token',
    'vit_classifier', 'use_g_prompt', 'use_e_prompt', 'e_prompt_layer_idx', 'use_prefix_tune_for_e_prompt',
    'prompt_pool', 'prompt_pool_param.pool_size', 'prompt_pool_param.length', 'prompt_pool_param.top_k',
    'prompt_pool_param.initializer', 'prompt_pool_param.prompt_key', 'prompt_pool_param.use_prompt_mask',
    'prompt_pool_param.mask_first_epoch', 'prompt_pool_param.shared_prompt_pool',
    'prompt_pool_param.shared_prompt_key', 'prompt_pool_param.batchwise_prompt', 'prompt_pool_param.prompt_key_init',
    'prompt_pool_param.embedding_key', 'predefined_key_path', 'freeze_part', 'freeze_bn_stats', 'subsample_rate',
    'pull_constraint', 'pull_constraint_coeff', 'prompt_histogram', 'prompt_mask_mode', 'save_prompts',
    'eval_per_epochs',
)


def _value(key):
  """A bound value, following a macro reference (`%NAME`) to its value."""
  v = gin.query_parameter(key)
  text = str(v)
  return gin.query_parameter(text) if text.startswith('%') else v


@pytest.fixture
def parsed():
  def parse(experiment, bindings=()):
    gin_utils.parse([f'experiments/{experiment}.gin'], list(bindings))
  yield parse
  gin.clear_config()


@pytest.mark.parametrize('experiment', sorted(OFFICIAL))
def test_official_presets_bind_the_official_values(parsed, experiment):
  parsed(experiment)
  official = OFFICIAL[experiment]
  bench = gin.query_parameter('experiment.Experiment.benchmark').scoped_configurable_fn()  # Reads no data.
  pool = gin.query_parameter('l2p.L2P.prompt_pool').scoped_configurable_fn(embed_dim=8, num_tasks=len(bench.tasks))
  assert (pool.pool_size, pool.prompt_length, pool.top_k) == (official['pool_size'], official['length'],
                                                               official['top_k'])
  assert (pool.diversity == 'task_mask') == official['use_prompt_mask']
  assert pool.shared_prompt_pool == official['shared_prompt_pool']
  assert pool.selection == 'batchwise' and pool.vote_size == 16 and pool.use_key  # Voted per device batch of 16.
  assert _value('l2p.L2P.pull_coefficient') == official['pull_constraint_coeff']
  assert _value('config.Training.reset_optimizer_per_task') == official['reinit_optimizer']
  # Run-wide values every official L2P config shares.
  assert _value('config.Training.global_batch_size') == 128  # 16 per device x 8.
  assert _value('optimizers.build_optimizer.base_learning_rate') == 0.03
  assert _value('optimizers.build_optimizer.scale_by_batch') is True
  assert _value('optimizers.build_optimizer.name') == 'adam'
  assert _value('optimizers.build_optimizer.schedule') == 'constant'
  assert _value('config.Training.grad_clip_norm') == 1.0
  assert _value('config.Training.grad_clip_scope') == 'all'  # The official norm includes the frozen backbone.
  assert _value('l2p.L2P.use_label_mask') is True
  assert _value('experiment.Experiment.seed') == 42
  assert _value('l2p_model.L2PModel.head_type') == 'prompt'
  assert _value('l2p_model.L2PModel.token_order') == 'prompts_first'
  assert _value('l2p_model.L2PModel.train_backbone') is False
  assert _value('vit.VisionTransformer.variant') == 'B/16'
  # The 224 px path: resize to 256, JPEG round trip, random-resized crop.
  assert bench.preprocess.image_size == 224 and bench.preprocess.jpeg_round_trip is True
  assert preprocessing.resolve_crop(bench.preprocess.crop, bench.preprocess.image_size) == 'resized'
  assert preprocessing.resize_size(bench.preprocess.image_size) == 256
  # Ours by default: every test example is evaluated (the documented deviation).
  assert _value('config.Evaluation.drop_remainder') is False
  if experiment == 'cifar100_gaussian_l2p':
    assert bench.repeat_episodes and bench.eval_every_episodes == 10 and len(bench.episodes) == 200
  else:
    assert bench.epochs == 5
    assert len(bench.tasks) == {'cifar100_l2p': 10, 'five_datasets_l2p': 5}[experiment]


def test_the_official_evaluation_is_one_binding_away(parsed):
  parsed('cifar100_l2p', ['config.Evaluation.drop_remainder = True'])
  assert _value('config.Evaluation.drop_remainder') is True


@pytest.mark.parametrize('experiment', ['cifar100_disjoint_l2p', 'quickstart'])
def test_32px_experiments_take_the_official_small_input_path(parsed, experiment):
  parsed(experiment)
  bench = gin.query_parameter('experiment.Experiment.benchmark').scoped_configurable_fn()
  assert preprocessing.resolve_crop(bench.preprocess.crop, bench.preprocess.image_size) == 'pad'
  pool = gin.query_parameter('l2p.L2P.prompt_pool').scoped_configurable_fn(embed_dim=8, num_tasks=5)
  assert pool.diversity == 'none' and pool.vote_size == 16
  assert _value('config.Evaluation.batch_size') % pool.vote_size == 0  # Vote groups never straddle batches.


def test_fidelity_page_names_every_official_key():
  with open(os.path.join(test_util.REPO_ROOT, 'docs', 'fidelity.md')) as f:
    text = f.read()
  rows = set(re.findall(r'^\| `([^`]+)` \|', text, flags=re.MULTILINE))
  missing = [k for k in OFFICIAL_KEYS if k not in rows]
  assert not missing, f'docs/fidelity.md has no row for {missing}'
  for experiment in OFFICIAL:
    assert f'experiments/{experiment}.gin' in text
