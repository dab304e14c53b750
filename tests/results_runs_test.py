"""tools/results_runs.sh: which runs it starts, in which order, with which bindings (a stand-in interpreter records
the command lines instead of training)."""

import os
import stat
import subprocess

import pytest

from tests import test_util

SCRIPT = os.path.join(test_util.REPO_ROOT, 'tools', 'results_runs.sh')


@pytest.fixture
def recorder(tmp_path):
  """A PYTHON that appends its arguments (one line, tab-separated) to calls.txt, makes the --model_dir it is given
  (as a run would) and succeeds."""
  log = tmp_path / 'calls.txt'
  fake = tmp_path / 'python'
  fake.write_text('#!/usr/bin/env bash\n'
                  f'(IFS=$\'\\t\'; echo "$*" >> {log})\n'
                  'for a in "$@"; do case "$a" in --model_dir=*) mkdir -p "${a#--model_dir=}" ;; esac; done\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  return fake, log


def run(recorder, out, *args, **env):
  fake, log = recorder
  proc = subprocess.run(['bash', SCRIPT, *args, str(out)], cwd=test_util.REPO_ROOT, capture_output=True, text=True,
                        timeout=60, env={**os.environ, 'PYTHON': str(fake), **env})
  calls = [line.split('\t') for line in log.read_text().splitlines()] if log.exists() else []
  return proc, calls


def test_rows_run_seed_major_with_the_protocol_budget(recorder, tmp_path):
  proc, calls = run(recorder, tmp_path / 'out', 'four_domains', SEEDS='0,1', ROWS='l2p ft_seq_frozen',
                    TRAIN_CAP='100', EVAL_CAP='20')
  assert proc.returncode == 0, proc.stderr
  seeds_calls = [c for c in calls if c[:2] == ['-m', 'l2p_tf.seeds']]
  order = [(c[2], c[3]) for c in seeds_calls]
  out = tmp_path / 'out'
  assert order == [(f'--model_dir={out}/l2p', '--seeds=0'), (f'--model_dir={out}/ft_seq_frozen', '--seeds=0'),
                   (f'--model_dir={out}/l2p', '--seeds=0,1'), (f'--model_dir={out}/ft_seq_frozen', '--seeds=0,1')]
  l2p, frozen = seeds_calls[0], seeds_calls[1]
  assert '--gin_file=gin_configs/experiments/four_domains_l2p.gin' in l2p
  assert frozen[frozen.index('--gin_file=gin_configs/experiments/four_domains_l2p.gin') + 1] == (
      '--gin_file=gin_configs/methods/ft_seq_frozen.gin')
  for call in seeds_calls:
    assert '--gin_bindings=benchmarks.Limits.max_train_examples_per_task = 100' in call
    assert '--gin_bindings=benchmarks.Limits.max_eval_examples_per_task = 20' in call
  assert '--gin_bindings=LEARNING_RATE = 0.03' in l2p and '--gin_bindings=LEARNING_RATE = 0.01' in frozen
  # The table at the end: only the rows that ran (here no joint row, so no gap ratio).
  summarize = calls[-1]
  assert summarize[:2] == ['-m', 'l2p_tf.summarize']
  assert summarize[2:] == [f'l2p={out}/l2p', f'ft_seq_frozen={out}/ft_seq_frozen']


def test_every_row_of_a_protocol_has_its_gin_files(recorder, tmp_path):
  for protocol, rows in (('disjoint', 8), ('four_domains', 9)):
    proc, calls = run(recorder, tmp_path / protocol, protocol, SEEDS='0')
    assert proc.returncode == 0, proc.stderr
    seeds_calls = [c for c in calls if c[:2] == ['-m', 'l2p_tf.seeds'] and f'{tmp_path / protocol}/' in c[2]]
    assert len(seeds_calls) == rows
    for call in seeds_calls:
      for arg in call:
        if arg.startswith('--gin_file='):
          assert os.path.isfile(os.path.join(test_util.REPO_ROOT, arg[len('--gin_file='):])), arg
  summarize = calls[-1]
  assert summarize[-2:] == ['--lower=ft_seq_frozen', '--upper=joint_linear']


def test_validation_sweep_reads_no_test_image(recorder, tmp_path):
  proc, calls = run(recorder, tmp_path / 'v', 'validation', VALIDATION_TASKS='2')
  assert proc.returncode == 0, proc.stderr
  seeds_calls = [c for c in calls if c[:2] == ['-m', 'l2p_tf.seeds']]
  assert len(seeds_calls) == 6 and all('--seeds=0' in c for c in seeds_calls)
  for call in seeds_calls:
    assert "--gin_bindings=benchmarks.split_cifar100.holdout = 'validation'" in call
    assert '--gin_bindings=benchmarks.Limits.max_tasks = 2' in call
  assert {c[2].rsplit('/', 1)[1] for c in seeds_calls} == {
      f'{m}_{lr}' for m in ('dualprompt', 'coda_prompt', 'l2p_plus_plus') for lr in ('0.003', '0.03')}


def test_unknown_protocol_and_failing_row_are_reported(recorder, tmp_path):
  proc, calls = run(recorder, tmp_path / 'x', 'imagenet')
  assert proc.returncode == 2 and "unknown protocol 'imagenet'" in proc.stderr and not calls
  fake, _ = recorder
  fake.write_text('#!/usr/bin/env bash\necho "boom" >&2; exit 3\n')
  proc, _ = run(recorder, tmp_path / 'y', 'disjoint', SEEDS='0', ROWS='l2p')
  assert proc.returncode != 0
  assert f'error: disjoint/l2p failed; its output: {tmp_path}/y/l2p.log' in proc.stderr
  assert 'boom' in (tmp_path / 'y' / 'l2p.log').read_text()
