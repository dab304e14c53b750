"""Tests of l2p_tf.summarize: the results table and the share of the gap closed."""

import json

import pytest

from l2p_tf import summarize


def _write(path, avg, forgetting, complete=True):
  path.mkdir()
  (path / 'results.json').write_text(json.dumps({
      'complete': complete, 'tasks_done': 5 if complete else 2, 'num_tasks': 5, 'wall_time_seconds': 90.0,
      'final': {'avg_acc': avg, 'forgetting': forgetting, 'learning_acc': avg + 1.0}}))


def test_table_and_gap(tmp_path, capsys):
  _write(tmp_path / 'a', 83.83, 7.63)
  _write(tmp_path / 'lo', 17.72, 59.09)
  _write(tmp_path / 'hi', 90.85, None)
  assert summarize.main([f'L2P={tmp_path / "a"}', f'frozen={tmp_path / "lo"}', f'joint={tmp_path / "hi"}',
                         '--lower=frozen', '--upper=joint', f'--json_out={tmp_path / "t.json"}']) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith('| run | final avg_acc | forgetting | learning_acc | wall time | gap closed |')
  assert out[2] == '| L2P | 83.83 | 7.63 | 84.83 | 1.5 min | 0.90 |'  # The paper's ratio on Split CIFAR-100.
  assert out[4] == '| joint | 90.85 | - | 91.85 | 1.5 min | - |'
  assert json.loads((tmp_path / 't.json').read_text())['L2P']['avg_acc'] == 83.83


def test_errors_name_the_run(tmp_path, capsys):
  _write(tmp_path / 'half', 50.0, 1.0, complete=False)
  assert summarize.main([f'x={tmp_path / "half"}']) == 2
  assert 'finished 2 of 5 tasks' in capsys.readouterr().err
  assert summarize.main([f'x={tmp_path / "nowhere"}']) == 2
  assert 'results.json does not exist' in capsys.readouterr().err
  _write(tmp_path / 'ok', 50.0, 1.0)
  with pytest.raises(ValueError, match="'joint' is not one of the labels"):
    summarize.table([('x', summarize.load(str(tmp_path / 'ok')))], lower='x', upper='joint')
