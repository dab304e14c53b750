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


def _write_curve(path, curve):
  path.mkdir()
  (path / 'results.json').write_text(json.dumps({
      'complete': True, 'tasks_done': len(curve), 'num_tasks': len(curve), 'wall_time_seconds': 60.0,
      'avg_acc': curve, 'final': {'avg_acc': curve[-1], 'forgetting': 1.0, 'learning_acc': 50.0}}))


def test_plain_directories_are_labelled_by_name_and_plotted(tmp_path, capsys):
  _write_curve(tmp_path / 'l2p', [90.0, 85.0, 80.0])
  _write_curve(tmp_path / 'frozen', [90.0, 60.0])
  png = tmp_path / 'avg_acc.png'
  assert summarize.main([str(tmp_path / 'l2p'), f'{tmp_path / "frozen"}/', f'joint={tmp_path / "l2p"}',
                         f'--plot={png}']) == 0
  rows = capsys.readouterr().out.splitlines()[2:]
  assert [r.split(' | ')[0] for r in rows] == ['| l2p', '| frozen', '| joint']
  assert png.read_bytes().startswith(b'\x89PNG') and png.stat().st_size > 5000
  # Two plain directories with one name need labels.
  (tmp_path / 'b').mkdir()
  _write_curve(tmp_path / 'b' / 'l2p', [50.0])
  assert summarize.main([str(tmp_path / 'l2p'), str(tmp_path / 'b' / 'l2p')]) == 2
  assert "two runs are labelled 'l2p'" in capsys.readouterr().err
