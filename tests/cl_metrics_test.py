"""Metrics against hand-computed accuracy matrices."""

import math

import numpy as np
import pytest

from l2p_tf import cl_metrics

N = math.nan
# acc[t, i]: accuracy on task i after training through task t.
ACC = np.array([
    [90.0, N, N],
    [80.0, 70.0, N],
    [85.0, 60.0, 50.0],  # task 0 improves after dropping (80 -> 85); task 1 drops 70 -> 60.
])


def test_avg_acc():
  assert cl_metrics.avg_acc(ACC, 0) == 90.0
  assert cl_metrics.avg_acc(ACC, 1) == 75.0
  assert cl_metrics.avg_acc(ACC, 2) == pytest.approx((85 + 60 + 50) / 3)


def test_forgetting_with_later_improvement():
  assert cl_metrics.forgetting(ACC, 0) is None
  assert cl_metrics.forgetting(ACC, 1) == 10.0  # task 0: 90 -> 80.
  # Task 0: best 90, now 85 -> 5. Task 1: best 70, now 60 -> 10. Mean 7.5.
  assert cl_metrics.forgetting(ACC, 2) == 7.5


def test_forgetting_counts_the_best_earlier_value_not_the_first():
  acc = np.array([[50.0, N, N], [70.0, 60.0, N], [65.0, 60.0, 40.0]])
  # Task 0 learned at 50, rose to 70 after task 1, now 65: forgetting 5 (from the best), not -15 (from the first).
  assert cl_metrics.forgetting(acc, 2) == pytest.approx((5 + 0) / 2)


def test_backward_and_learning_acc():
  assert cl_metrics.backward(ACC, 2) == pytest.approx(((85 - 90) + (60 - 70)) / 2)
  assert cl_metrics.learning_acc(ACC, 2) == pytest.approx((90 + 70 + 50) / 3)
  assert cl_metrics.learning_acc(ACC, 0) == 90.0


def test_curves_stop_at_the_last_complete_row():
  partial = np.vstack([ACC[:2], np.full((1, 3), N)])
  curves = cl_metrics.metric_curves(partial)
  assert curves['avg_acc'] == [90.0, 75.0]
  assert curves['forgetting'] == [None, 10.0]


def test_missing_entry_is_an_error():
  bad = ACC.copy()
  bad[2, 1] = N
  with pytest.raises(ValueError, match='row 2 has missing entries'):
    cl_metrics.avg_acc(bad, 2)


def test_format_matrix():
  text = cl_metrics.format_matrix(ACC, ['t0', 't1', 't2'])
  lines = text.splitlines()
  assert len(lines) == 4
  assert '90.00' in lines[1] and lines[1].rstrip().endswith('90.00')
  assert lines[3].split()[-1] == '65.00'


def test_joint_curves():
  row = np.array([[60.0, 70.0, 80.0]])
  curves = cl_metrics.joint_curves(row)
  assert curves == {'avg_acc': [70.0], 'forgetting': [0.0], 'backward': [0.0], 'learning_acc': [70.0]}
  assert cl_metrics.joint_curves(np.full((1, 3), np.nan))['avg_acc'] == []
