"""The results files: accuracy-matrix CSV and PNG labelled with the tasks' and evaluation sets' full names."""

import csv
import io
import json
import warnings

import numpy as np

from l2p_tf import results


def _results(task_names, eval_names):
  return {'tasks': [{'name': n} for n in task_names], 'eval_names': list(eval_names)}


def test_task_agnostic_matrix_is_labelled_by_segments_and_evaluation_set(tmp_path):
  # A Gaussian-schedule run: rows are segments of episodes, the one column is the whole test set.
  acc = np.array([[1.5], [2.5]])
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # matplotlib's layout warnings on a one-column matrix included.
    png = results.write_all(str(tmp_path), _results(['episodes_0-19', 'episodes_20-39'], ['all']), acc,
                            ['episodes_0-19', 'episodes_20-39'])
  rows = list(csv.reader(io.StringIO((tmp_path / 'accuracy_matrix.csv').read_text())))
  assert rows == [['after_task', 'all'], ['episodes_0-19', '1.5000'], ['episodes_20-39', '2.5000']]
  assert png.startswith(b'\x89PNG') and (tmp_path / 'accuracy_matrix.png').read_bytes() == png
  assert json.loads((tmp_path / 'results.json').read_text())['eval_names'] == ['all']


def test_long_names_are_kept_whole():
  names = ['fashion_mnist', 'svhn_cropped_with_a_long_name']
  acc = np.array([[50.0, np.nan], [40.0, 70.0]])
  rows = list(csv.reader(io.StringIO(results.matrix_csv(acc, names))))
  assert rows[0] == ['after_task'] + names
  assert [r[0] for r in rows[1:]] == names
  assert rows[1][2] == ''  # Not evaluated yet.
  assert results._wrap('svhn_cropped_with_a_long_name').replace('\n', '') == 'svhn_cropped_with_a_long_name'


def test_a_run_stopped_before_its_first_evaluation_still_gets_a_figure():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    png = results.heatmap_png(np.zeros((0, 5)), ['task_0'])
  assert png.startswith(b'\x89PNG')
  assert results.matrix_csv(np.zeros((0, 2)), ['a', 'b']) == 'after_task,a,b\n'
