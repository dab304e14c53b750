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
  assert out[0] == ('| run | seeds | protocol | final avg_acc | last_acc | avg incremental | til_acc | task_id | '
                    'forgetting | learning_acc | wall time | gap closed |')
  # The paper's ratio on Split CIFAR-100; results without protocols (older runs) leave the new columns empty.
  assert out[2] == '| L2P | 1 | - | 83.83 | - | - | - | - | 7.63 | 84.83 | 1.5 min | 0.90 |'
  assert out[4] == '| joint | 1 | - | 90.85 | - | - | - | - | - | 91.85 | 1.5 min | - |'
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


def _write_protocols(path, seed, official, mixed):
  path.mkdir(parents=True)
  final = lambda avg, task_id: {'avg_acc': avg, 'forgetting': 1.0, 'learning_acc': 50.0, 'last_acc': avg,
                                'avg_incremental_acc': avg + 5, 'til_avg_acc': avg + 10, 'task_id_acc': task_id}
  (path / 'results.json').write_text(json.dumps({
      'complete': True, 'tasks_done': 2, 'num_tasks': 2, 'wall_time_seconds': 60.0, 'seed': seed,
      'primary_protocol': 'official', 'final': final(official, 90.0),
      'protocols': {'official': {'final': final(official, 90.0)}, 'mixed': {'final': final(mixed, 40.0 + seed)}}}))


def test_seed_runs_are_one_row_of_mean_and_std(tmp_path, capsys):
  for seed, (official, mixed) in enumerate([(60.0, 50.0), (62.0, 46.0), (64.0, 48.0)]):
    _write_protocols(tmp_path / 'l2p' / f'seed_{seed}', seed, official, mixed)
  _write_protocols(tmp_path / 'one', 0, 70.0, 30.0)
  assert summarize.main([str(tmp_path / 'l2p'), str(tmp_path / 'one'), f'--json_out={tmp_path / "t.json"}']) == 0
  out = capsys.readouterr().out.splitlines()
  # Mean 62, sample std 2 (ddof 1); avg incremental = avg + 5, til = avg + 10.
  assert out[2] == ('| l2p | 3 | official | 62.00 ± 2.00 | 62.00 ± 2.00 | 67.00 ± 2.00 | 72.00 ± 2.00 | '
                    '90.00 ± 0.00 | 1.00 ± 0.00 | 50.00 ± 0.00 | 1.0 min |')
  assert out[3].startswith('| one | 1 | official | 70.00 | 70.00 | 75.00 |')
  sides = out[out.index('| run | official avg_acc | mixed avg_acc | official task_id | mixed task_id |'):]
  assert sides[2] == '| l2p | 62.00 ± 2.00 | 48.00 ± 2.00 | 90.00 ± 0.00 | 41.00 ± 1.00 |'
  assert sides[3] == '| one | 70.00 | 30.00 | 90.00 | 40.00 |'
  row = json.loads((tmp_path / 't.json').read_text())['l2p']
  assert (row['seeds'], row['avg_acc'], row['avg_acc_std']) == (3, 62.0, 2.0)


def test_an_unfinished_seed_is_named(tmp_path, capsys):
  _write_protocols(tmp_path / 'r' / 'seed_0', 0, 60.0, 50.0)
  (tmp_path / 'r' / 'seed_1').mkdir()
  assert summarize.main([str(tmp_path / 'r')]) == 2
  assert 'seed_1' in capsys.readouterr().err
