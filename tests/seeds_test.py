"""l2p_tf.seeds: one l2p_tf.main process per seed, complete seeds skipped, a failure stops and is reported."""

import json

import pytest

from l2p_tf import seeds


def _finish(model_dir, seed):
  model_dir.mkdir(parents=True)
  final = {'avg_acc': 50.0 + seed, 'forgetting': 1.0, 'learning_acc': 50.0}
  (model_dir / 'results.json').write_text(json.dumps({'complete': True, 'tasks_done': 1, 'num_tasks': 1,
                                                      'final': final}))


def test_runs_each_missing_seed_then_summarizes(tmp_path, capsys):
  _finish(tmp_path / 'seed_0', 0)  # Already complete: skipped.
  calls = []

  def run(cmd):
    calls.append(cmd)
    seed = int(cmd[-1].split('=')[-1])
    _finish(tmp_path / f'seed_{seed}', seed)
    return 0

  assert seeds.main([f'--model_dir={tmp_path}', '--seeds=0,1,2', '--gin_file=x.gin', '--tfds_manual_dir=d'],
                    run=run) == 0
  assert [c[3:] for c in calls] == [
      [f'--model_dir={tmp_path}/seed_{s}', '--gin_file=x.gin', '--tfds_manual_dir=d', f'--gin_bindings=SEED = {s}']
      for s in (1, 2)]
  assert calls[0][1:3] == ['-m', 'l2p_tf.main']
  out = capsys.readouterr().out
  assert 'seed 0:' in out and 'skipped' in out
  assert '| 3 | - | 51.00 ± 1.00 |' in out  # Seeds 0, 1, 2: avg_acc 50, 51, 52.


def test_a_failing_seed_stops_the_rest(tmp_path, capsys):
  calls = []
  assert seeds.main([f'--model_dir={tmp_path}', '--seeds=3,4'], run=lambda cmd: calls.append(cmd) or 75) == 75
  assert len(calls) == 1
  assert 'seed 3 ended with exit code 75' in capsys.readouterr().err


@pytest.mark.parametrize('text', ['', '1,x', '2,2'])
def test_bad_seed_lists_are_refused_quoting_them(text, capsys):
  assert seeds.main(['--model_dir=/tmp/nowhere', f'--seeds={text}'], run=lambda cmd: 0) == 2
  assert repr(text) in capsys.readouterr().err
