"""Tests for fasca_jax.metrics against hand-computed values and sklearn."""

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as sk  # requirements-dev.txt pins it: these tests never skip.

from configs import meld
from configs import mosei
from fasca_jax import metrics
from fasca_jax import tasks
from fasca_jax.label_names import MOSEI_EMOTIONS

# Ten samples exercising every branch of the MOSI/MOSEI metrics.
#   idx  label  pred   what it tests
#   0     0.0    0.5   label 0 (Has0 only); pred 0.5 rounds to 0 (to even)
#   1     0.0   -0.3   label 0 with negative pred: wrong in Has0, not in Non0
#   2     1.2    0.0   pred exactly 0: right in Has0 (>=), wrong in Non0 (>)
#   3    -0.4   -0.5   pred -0.5 rounds to -0, label -0.4 to -0
#   4     2.6    3.8   pred clipped to 3 (a7) / 2 (a5); unclipped in MAE
#   5    -3.4   -2.5   label clipped to -3 (a7); pred -2.5 rounds to -2
#   6     1.5    2.4   label 1.5 rounds to 2
#   7     2.5    1.6   label 2.5 rounds to 2 (not 3)
#   8    -1.0   -1.6   a7: -1 vs -2
#   9     0.6    1.5   pred 1.5 rounds to 2, label to 1
SENT_LABELS = [0.0, 0.0, 1.2, -0.4, 2.6, -3.4, 1.5, 2.5, -1.0, 0.6]
SENT_PREDS = [0.5, -0.3, 0.0, -0.5, 3.8, -2.5, 2.4, 1.6, -1.6, 1.5]


def test_sentiment_metrics_hand_case():
  got = metrics.sentiment_metrics(SENT_PREDS, SENT_LABELS)
  assert list(got) == [
    'Has0_acc_2',
    'Has0_F1_score',
    'Non0_acc_2',
    'Non0_F1_score',
    'Mult_acc_5',
    'Mult_acc_7',
    'MAE',
    'Corr',
  ]
  assert all(type(v) is float for v in got.values())
  # Has0: truth l >= 0 = T T T F T F T T F T, preds p >= 0 = T F T F T F T T
  # F T; only idx 1 differs -> 9/10.
  assert got['Has0_acc_2'] == pytest.approx(9 / 10, abs=1e-15)
  # Class T: support 7, predicted 6, TP 6 -> F1 = 2*6/(7+6) = 12/13.
  # Class F: support 3, predicted 4, TP 3 -> F1 = 2*3/(3+4) = 6/7.
  # Weighted: (7 * 12/13 + 3 * 6/7) / 10 = (588/91 + 234/91) / 10 = 411/455.
  assert got['Has0_F1_score'] == pytest.approx(411 / 455, abs=1e-15)
  # Non0 keeps idx 2..9: truth l > 0 = T F T F T T F T, preds p > 0 =
  # F F T F T T F T; only idx 2 differs -> 7/8.
  assert got['Non0_acc_2'] == pytest.approx(7 / 8, abs=1e-15)
  # Class T: support 5, predicted 4, TP 4 -> 8/9.
  # Class F: support 3, predicted 4, TP 3 -> 6/7.
  # Weighted: (5 * 8/9 + 3 * 6/7) / 8 = (280/63 + 162/63) / 8 = 221/252.
  assert got['Non0_F1_score'] == pytest.approx(221 / 252, abs=1e-15)
  # a7 labels: round(clip) = 0 0 1 -0 3 -3 2 2 -1 1
  #    preds:  round(clip) = 0 -0 0 -0 3 -2 2 2 -2 2
  # Mismatches at idx 2, 5, 8, 9 -> 6/10.
  assert got['Mult_acc_7'] == pytest.approx(6 / 10, abs=1e-15)
  # a5 labels: round(clip) = 0 0 1 -0 2 -2 2 2 -1 1
  #    preds:  round(clip) = 0 -0 0 -0 2 -2 2 2 -2 2
  # Mismatches at idx 2, 8, 9 -> 7/10.
  assert got['Mult_acc_5'] == pytest.approx(7 / 10, abs=1e-15)
  # |p - l| = .5 .3 1.2 .1 1.2 .9 .9 .9 .6 .9, sum 7.5 -> 0.75.
  assert got['MAE'] == pytest.approx(0.75, abs=1e-15)


def test_sentiment_metrics_corr():
  # Means 2.5 and 2.5; deviations p = -1.5 -.5 .5 1.5, l = -1.5 .5 -.5 1.5.
  # r = (2.25 - .25 - .25 + 2.25) / sqrt(5 * 5) = 4 / 5.
  got = metrics.sentiment_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
  assert got['Corr'] == pytest.approx(0.8, abs=1e-15)


def test_sentiment_metrics_corr_uses_unclipped_values():
  # Clipped to [-3, 3] the preds would be 0 1 2 3 and r = 1. Unclipped:
  # deviations p = -3 -2 -1 6, l = -1.5 -.5 .5 1.5.
  # r = (4.5 + 1 - .5 + 9) / sqrt(50 * 5) = 14 / sqrt(250).
  got = metrics.sentiment_metrics([0.0, 1.0, 2.0, 9.0], [0.0, 1.0, 2.0, 3.0])
  assert got['Corr'] == pytest.approx(14 / math.sqrt(250), abs=1e-15)
  # |p - l| = 0 0 0 6 -> 1.5.
  assert got['MAE'] == pytest.approx(1.5, abs=1e-15)


def test_sentiment_metrics_accepts_column_preds():
  column = metrics.sentiment_metrics(np.array(SENT_PREDS)[:, None], SENT_LABELS)
  assert column == metrics.sentiment_metrics(SENT_PREDS, SENT_LABELS)


@pytest.mark.filterwarnings('error')
def test_sentiment_metrics_all_zero_labels_gives_nan_non0():
  # truth all >= 0; preds >= 0 = T F T -> Has0 acc 2/3. Non0 is undefined.
  got = metrics.sentiment_metrics([1.0, -1.0, 0.4], [0.0, 0.0, 0.0])
  assert got['Has0_acc_2'] == pytest.approx(2 / 3, abs=1e-15)
  assert math.isnan(got['Non0_acc_2'])
  assert math.isnan(got['Non0_F1_score'])
  assert math.isnan(got['Corr'])  # Constant labels.


@pytest.mark.filterwarnings('error')
@pytest.mark.parametrize('preds', [[0.3, 0.3, 0.3], [0.3]])
def test_sentiment_metrics_constant_preds_gives_nan_corr(preds):
  labels = [1.0, -2.0, 0.5][: len(preds)]
  got = metrics.sentiment_metrics(preds, labels)
  assert math.isnan(got['Corr'])
  assert not math.isnan(got['MAE'])


# Seven samples over three classes; class 2 is predicted but never true.
F1_TRUE = [0, 0, 0, 1, 1, 1, 1]
F1_PRED = [0, 0, 2, 1, 1, 0, 1]
# Class 0: support 3, predicted 3 (idx 0, 1, 5), TP 2 -> F1 = 4/6 = 2/3.
# Class 1: support 4, predicted 3 (idx 3, 4, 6), TP 3 -> F1 = 6/7.
# Class 2: support 0, predicted 1, TP 0 -> F1 = 0.


def test_f1_hand_case():
  # Weighted: (3 * 2/3 + 4 * 6/7 + 0 * 0) / 7 = (2 + 24/7) / 7 = 38/49.
  assert metrics.weighted_f1(F1_TRUE, F1_PRED) == pytest.approx(38 / 49, abs=1e-15)
  # Macro over the union {0, 1, 2}: (2/3 + 6/7 + 0) / 3 = 32/63.
  assert metrics.macro_f1(F1_TRUE, F1_PRED) == pytest.approx(32 / 63, abs=1e-15)
  # Matches at idx 0, 1, 3, 4, 6.
  assert metrics.accuracy(F1_TRUE, F1_PRED) == pytest.approx(5 / 7, abs=1e-15)


def test_f1_single_class():
  # Only class 0 anywhere: its F1 is 1.
  assert metrics.weighted_f1([0, 0], [0, 0]) == 1.0
  assert metrics.macro_f1([0, 0], [0, 0]) == 1.0


@pytest.mark.parametrize('seed', range(6))
def test_f1_matches_sklearn(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 200))
  y_true = rng.integers(0, 5, n)
  y_pred = rng.integers(0, 6, n)  # Class 5 is never true.
  if seed % 2:  # Correlated predictions, so F1s are far from 0.
    y_pred = np.where(rng.random(n) < 0.7, y_true, y_pred)
  for average, ours in (('weighted', metrics.weighted_f1), ('macro', metrics.macro_f1)):
    want = sk.f1_score(y_true, y_pred, average=average, zero_division=0)
    assert abs(ours(y_true, y_pred) - want) <= 1e-12, average
  assert abs(metrics.accuracy(y_true, y_pred) - sk.accuracy_score(y_true, y_pred)) <= 1e-12


def _mmsa_regression(preds, labels):
  """MMSA metricsTop.__eval_mosei_regression with sklearn, unrounded."""
  test_preds, test_truth = preds.reshape(-1), labels.reshape(-1)

  def multiclass_acc(y_pred, y_true):
    return np.sum(np.round(y_pred) == np.round(y_true)) / float(len(y_true))

  non_zeros = np.array([i for i, e in enumerate(test_truth) if e != 0])
  nz_truth = test_truth[non_zeros] > 0
  nz_preds = test_preds[non_zeros] > 0
  binary_truth, binary_preds = test_truth >= 0, test_preds >= 0
  return {
    'Has0_acc_2': sk.accuracy_score(binary_preds, binary_truth),
    'Has0_F1_score': sk.f1_score(binary_truth, binary_preds, average='weighted'),
    'Non0_acc_2': sk.accuracy_score(nz_preds, nz_truth),
    'Non0_F1_score': sk.f1_score(nz_truth, nz_preds, average='weighted'),
    'Mult_acc_5': multiclass_acc(np.clip(test_preds, -2.0, 2.0), np.clip(test_truth, -2.0, 2.0)),
    'Mult_acc_7': multiclass_acc(np.clip(test_preds, -3.0, 3.0), np.clip(test_truth, -3.0, 3.0)),
    'MAE': np.mean(np.absolute(test_preds - test_truth)),
    'Corr': np.corrcoef(test_preds, test_truth)[0][1],
  }


@pytest.mark.parametrize('seed', range(6))
def test_sentiment_metrics_matches_mmsa(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(20, 300))
  # MOSI-like labels: averages of integer ratings in [-3, 3], many exact 0s
  # and half-integers; preds continuous, out of range, and on .5 ties.
  labels = np.round(rng.uniform(-3.4, 3.4, n) * 2) / 2
  labels[rng.random(n) < 0.15] = 0.0
  preds = rng.uniform(-4.0, 4.0, n)
  ties = rng.random(n) < 0.3
  preds[ties] = np.round(preds[ties]) + 0.5
  preds[rng.random(n) < 0.05] = 0.0
  got = metrics.sentiment_metrics(preds, labels)
  want = _mmsa_regression(preds, labels)
  assert list(got) == list(want)
  for key in want:
    assert abs(got[key] - want[key]) <= 1e-12, key


def _logits_for(pred_ids, num_classes):
  """(N, C) logits whose argmax is pred_ids: 2 at the class, -1 elsewhere."""
  return np.where(np.arange(num_classes) == np.asarray(pred_ids)[:, None], 2.0, -1.0)


@pytest.mark.parametrize('one_hot', [False, True])
def test_emotion_metrics_hand_case(one_hot):
  logits = _logits_for(F1_PRED, 4)  # Class 3 neither true nor predicted.
  labels = np.eye(4)[F1_TRUE] if one_hot else np.array(F1_TRUE)
  got = metrics.emotion_metrics(logits, labels, class_names=list('abcd'))
  assert got == pytest.approx(
    {
      'Acc': 5 / 7,
      'F1_weighted': 38 / 49,
      'F1_macro': 32 / 63,  # Over classes 0, 1, 2 only: class 3 is absent.
      'F1_a': 2 / 3,
      'F1_b': 6 / 7,
      'F1_c': 0.0,
      'F1_d': 0.0,
    },
    abs=1e-15,
  )
  assert list(metrics.emotion_metrics(logits, labels)) == ['Acc', 'F1_weighted', 'F1_macro']


# IEMOCAP: 4 samples x (Neutral, Happy, Sad, Angry).
IEMO_LABELS = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1], [1, 0, 0, 1]])
IEMO_PREDS = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 1], [1, 0, 1, 1]])


@pytest.mark.parametrize('one_hot', [False, True])
def test_iemocap_metrics_hand_case(one_hot):
  # (N, 4, 2) logits with argmax IEMO_PREDS: [+s, -s] for 0, [-s, +s] for 1.
  sign = 2 * IEMO_PREDS - 1
  logits = np.stack([-sign, sign], axis=-1) * 1.5
  labels = np.eye(2)[IEMO_LABELS] if one_hot else IEMO_LABELS
  got = metrics.iemocap_metrics(logits, labels)
  assert list(got) == [
    'Neutral_acc',
    'Neutral_F1',
    'Happy_acc',
    'Happy_F1',
    'Sad_acc',
    'Sad_F1',
    'Angry_acc',
    'Angry_F1',
    'Mean_acc',
    'Mean_F1',
  ]
  assert got == pytest.approx(
    {
      # Neutral: truth 1 0 0 1, preds 1 0 1 1 -> acc 3/4.
      # Class 1: sup 2, pred 3, TP 2 -> 4/5; class 0: sup 2, pred 1, TP 1 ->
      # 2/3. Weighted (2 * 4/5 + 2 * 2/3) / 4 = 11/15.
      'Neutral_acc': 3 / 4,
      'Neutral_F1': 11 / 15,
      # Happy: all 0 in both -> 1 and 1.
      'Happy_acc': 1.0,
      'Happy_F1': 1.0,
      # Sad: truth 0 1 0 0, preds 1 0 0 1 -> acc 1/4.
      # Class 0: sup 3, pred 2, TP 1 -> 2/5; class 1: sup 1, pred 2, TP 0 ->
      # 0. Weighted (3 * 2/5 + 0) / 4 = 3/10.
      'Sad_acc': 1 / 4,
      'Sad_F1': 3 / 10,
      # Angry: truth 1 1 1 1, preds 0 1 1 1 -> acc 3/4.
      # Class 1: sup 4, pred 3, TP 3 -> 6/7; class 0: sup 0 -> weight 0.
      'Angry_acc': 3 / 4,
      'Angry_F1': 6 / 7,
      # (3/4 + 1 + 1/4 + 3/4) / 4 = 11/16.
      'Mean_acc': 11 / 16,
      # (154 + 210 + 63 + 180) / 210 / 4 = 607/840.
      'Mean_F1': 607 / 840,
    },
    abs=1e-15,
  )


def test_tasks_dispatch_to_their_metrics():
  """Each task's metrics are the field's (first, in their order), then RMSE / AUC."""
  mmsa = metrics.sentiment_metrics(SENT_PREDS, SENT_LABELS)
  regression = tasks.get_task('regression').metrics(SENT_PREDS, SENT_LABELS)
  assert regression == {
    **mmsa,
    'RMSE': metrics.rmse(SENT_PREDS, SENT_LABELS),
    **metrics.sentiment_auc(SENT_PREDS, SENT_LABELS),
  }
  assert list(regression)[: len(mmsa)] == list(mmsa)
  mult = tasks.get_task('regression', metrics_convention='mult').metrics(SENT_PREDS, SENT_LABELS)
  assert mult == {**regression, **metrics.mult_sentiment_metrics(SENT_PREDS, SENT_LABELS)}
  logits = _logits_for(F1_PRED, 3)
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  emotion = metrics.emotion_metrics(probs, F1_TRUE)
  assert tasks.get_task('classification', 3).metrics(probs, F1_TRUE) == {
    **emotion,
    **metrics.emotion_auc(probs, F1_TRUE),
  }
  assert emotion == metrics.emotion_metrics(logits, F1_TRUE)
  iemo_logits = np.stack([1 - IEMO_PREDS, IEMO_PREDS], axis=-1)
  iemocap = tasks.get_task('iemocap', 2).metrics(iemo_logits, IEMO_LABELS)
  expected = {
    **metrics.iemocap_metrics(iemo_logits, IEMO_LABELS),
    **metrics.iemocap_auc(iemo_logits, IEMO_LABELS),
  }
  assert list(iemocap) == list(expected)  # Happy and Angry have one class: AUC NaN.
  assert iemocap == pytest.approx(expected, rel=0, abs=0, nan_ok=True)
  with pytest.raises(
    ValueError,
    match=r"unknown task 'ranking'.*"
    r"\['classification', 'iemocap', 'mosei_emotions', 'regression'\]",
  ):
    tasks.get_task('ranking')
  with pytest.raises(ValueError, match=r"metrics_convention='MulT': expected one of"):
    tasks.get_task('regression', metrics_convention='MulT')


def test_format_table():
  table = metrics.format_table(
    {
      'val': {'MAE': 0.75, 'Corr': 0.8},
      'test': {'MAE': 1.23456, 'Corr': float('nan'), 'Has0_acc_2': 0.9},
    }
  )
  assert table == '\n'.join(
    [
      'metric         val    test',
      'MAE         0.7500  1.2346',
      'Corr        0.8000     nan',
      'Has0_acc_2       -  0.9000',
    ]
  )


@pytest.mark.parametrize(
  'fn, args, message',
  [
    (
      metrics.sentiment_metrics,
      ([1.0, 2.0], [1.0, 2.0, 3.0]),
      r'preds and labels .* preds \(2,\) and labels \(3,\)',
    ),
    (
      metrics.sentiment_metrics,
      (np.zeros((2, 3)), np.zeros((3, 2))),
      r'preds \(2, 3\) and labels \(3, 2\)',
    ),
    (metrics.sentiment_metrics, ([], []), r'preds is empty \(shape \(0,\)\)'),
    (
      metrics.sentiment_metrics,
      ([1.0, np.nan, np.inf], [0.0, 1.0, 2.0]),
      r'preds has 2 non-finite value\(s\) \(shape \(3,\)\)',
    ),
    (
      metrics.sentiment_metrics,
      ([1.0, 2.0], [0.0, -np.inf]),
      r'labels has 1 non-finite value\(s\) \(shape \(2,\)\)',
    ),
    (metrics.weighted_f1, ([0, 1], [0]), r'y_pred and y_true .* y_pred \(1,\) and y_true \(2,\)'),
    (metrics.macro_f1, ([], []), r'y_pred is empty'),
    (metrics.accuracy, ([0, 1, 1], [1, 0]), r'y_pred \(2,\) and y_true \(3,\)'),
    (
      metrics.emotion_metrics,
      (np.zeros((3, 4)), [0, 1]),
      r'labels must have shape \(3,\) .* or \(3, 4\) .* '
      r'logits_or_probs \(3, 4\), got labels \(2,\)',
    ),
    (
      metrics.emotion_metrics,
      (np.zeros((3, 4)), [0, 4, 1]),
      r'class ids in \[0, 4\), got values in \[0, 4\]',
    ),
    (metrics.emotion_metrics, (np.zeros((2, 4)), [0, 1.5]), r'class ids in \[0, 4\)'),
    (
      metrics.emotion_metrics,
      (np.full((2, 3), np.nan), [0, 1]),
      r'logits_or_probs has 6 non-finite value\(s\) \(shape \(2, 3\)\)',
    ),
    (
      metrics.emotion_metrics,
      (np.zeros(3), [0, 1, 2]),
      r'logits_or_probs must have shape \(\.\.\., num_classes\), got \(3,\)',
    ),
    (
      metrics.emotion_metrics,
      (np.zeros((2, 3)), [0, 1], ['a', 'b']),
      r'class_names has 2 names, logits_or_probs has 3 classes',
    ),
    (
      metrics.iemocap_metrics,
      (np.zeros((5, 8)), np.zeros((5, 4))),
      r'logits must have shape \(N, 4, 2\), got \(5, 8\)',
    ),
    (
      metrics.iemocap_metrics,
      (np.zeros((5, 4, 2)), np.zeros((5, 2))),
      r'labels must have shape \(5, 4\) .* got labels \(5, 2\)',
    ),
    (metrics.iemocap_metrics, (np.zeros((1, 4, 2)), [[0, 1, 2, 0]]), r'class ids in \[0, 2\)'),
  ],
)
def test_bad_input_raises(fn, args, message):
  with pytest.raises(ValueError, match=message):
    fn(*args)


def test_task_descriptions_and_class_names():
  task = tasks.from_config(meld.get_config('text'))
  assert task.class_names[0] == 'neutral' and len(task.class_names) == task.num_classes == 7
  probs = np.full(7, 0.1, np.float32)
  probs[4] = 0.4
  assert task.describe(probs)['prediction'] == 'joy'
  unnamed = tasks.get_task('classification', 2).describe(np.array([0.3, 0.7]))
  assert unnamed == {'prediction': 'class_1', 'probabilities': {'class_0': 0.3, 'class_1': 0.7}}
  iemocap = tasks.get_task('iemocap', 2).describe(
    np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
  )
  assert iemocap['prediction'] == ['Happy', 'Angry']
  assert iemocap['probabilities'] == pytest.approx(
    {'Neutral': 0.1, 'Happy': 0.8, 'Sad': 0.4, 'Angry': 0.7}
  )


# --- MulT's sentiment convention, RMSE, ROC-AUC, MOSEI emotions --------------------------------
def test_mult_convention_hand_case():
  """The issue's example: MulT's swapped-argument F1 against sklearn's argument order."""
  preds, labels = [1.0, 1.0, 1.0, 1.0, -1.0, 1.0], [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
  got = metrics.mult_sentiment_metrics(preds, labels)
  # preds > 0 = T T T T F T, labels > 0 = T T T F F F. Per class F1 (symmetric): T: TP 3,
  # 3 true, 5 predicted -> 6/8 = 3/4; F: TP 1, 3 true, 1 predicted -> 2/4 = 1/2.
  # MulT weights by the predicted counts (5, 1): (5 * 3/4 + 1 * 1/2) / 6 = 17/24 = 0.7083.
  assert got['MulT_F1_score'] == pytest.approx(17 / 24, abs=1e-15)
  assert round(got['MulT_F1_score'], 4) == 0.7083
  # sklearn's order weights by the true counts (3, 3): (3 * 3/4 + 3 * 1/2) / 6 = 0.625.
  assert metrics.sentiment_metrics(preds, labels)['Non0_F1_score'] == pytest.approx(0.625)
  # No zero label: exclude_zero makes no difference; accuracy 4/6 either way.
  assert got['MulT_F1_score_all'] == got['MulT_F1_score']
  assert got['MulT_acc_2'] == got['MulT_acc_2_all'] == pytest.approx(4 / 6, abs=1e-15)
  sk = pytest.importorskip('sklearn.metrics')
  p, t = np.array(preds) > 0, np.array(labels) > 0
  assert got['MulT_F1_score'] == pytest.approx(sk.f1_score(p, t, average='weighted'), abs=1e-15)
  assert sk.f1_score(t, p, average='weighted') == pytest.approx(0.625, abs=1e-15)


def test_mult_convention_with_zero_labels():
  """Where the conventions differ on accuracy: a zero label is negative for MulT's `_all`
  (> 0 vs <= 0) and positive for MMSA's Has0 (>= 0)."""
  preds, labels = [0.5, -0.2, 1.0, -1.0], [0.0, 0.0, 2.0, -1.0]
  got = metrics.mult_sentiment_metrics(preds, labels)
  mmsa = metrics.sentiment_metrics(preds, labels)
  # Has0: truth >= 0 = T T T F, preds >= 0 = T F T F -> 3/4.
  assert mmsa['Has0_acc_2'] == pytest.approx(3 / 4, abs=1e-15)
  # MulT _all: truth > 0 = F F T F, preds > 0 = T F T F -> 3/4 (index 0 wrong, index 1 right).
  assert got['MulT_acc_2_all'] == pytest.approx(3 / 4, abs=1e-15)
  # Its swapped F1 (y_true = preds): class T: TP 1, 2 pred-"true", 1 truth -> 2/3; class F:
  # TP 2, 2, 3 -> 4/5; weighted by preds' counts (2, 2): (2 * 2/3 + 2 * 4/5) / 4 = 11/15.
  assert got['MulT_F1_score_all'] == pytest.approx(11 / 15, abs=1e-15)
  # Non-zero samples only (indices 2, 3): both right.
  assert got['MulT_acc_2'] == mmsa['Non0_acc_2'] == 1.0 and got['MulT_F1_score'] == 1.0


def test_metrics_convention_from_config():
  config = mosei.get_config('aligned')
  assert config.metrics_convention == 'mmsa'
  assert not any(k.startswith('MulT_') for k in tasks.from_config(config).metrics([1.0], [1.0]))
  config.metrics_convention = 'mult'
  got = tasks.from_config(config).metrics(SENT_PREDS, SENT_LABELS)
  assert list(got)[-4:] == ['MulT_acc_2', 'MulT_F1_score', 'MulT_acc_2_all', 'MulT_F1_score_all']


def test_rmse_hand_case():
  # Errors 1, -2, 2 -> sqrt((1 + 4 + 4) / 3) = sqrt(3).
  assert metrics.rmse([1.0, 0.0, 3.0], [0.0, 2.0, 1.0]) == pytest.approx(math.sqrt(3), abs=1e-15)


def test_roc_auc_hand_case():
  # Positives score 0.8, 0.4; negatives 0.4, 0.1. Pairs: (0.8 > 0.4), (0.8 > 0.1), (0.4 = 0.4)
  # counts 1/2, (0.4 > 0.1) -> 3.5 / 4.
  assert metrics.roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == 3.5 / 4
  assert math.isnan(metrics.roc_auc([1, 1], [0.3, 0.2]))  # one class: undefined.
  assert math.isnan(metrics.roc_auc([0, 0, 0], [0.3, 0.2, 0.1]))


@pytest.mark.parametrize('seed', range(6))
def test_roc_auc_matches_sklearn(seed):
  sk = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(seed)
  n = int(rng.integers(2, 300))
  y = rng.random(n) < rng.uniform(0.1, 0.9)
  y[:2] = [True, False]
  scores = rng.normal(size=n) + y * rng.uniform(0, 2)
  if seed % 2:  # Many ties, also across the classes.
    scores = np.round(scores * 2) / 2
  assert abs(metrics.roc_auc(y, scores) - sk.roc_auc_score(y, scores)) <= 1e-12
  assert abs(metrics.roc_auc(y, scores.astype(np.float32)) - sk.roc_auc_score(y, scores)) <= 1e-6


@pytest.mark.parametrize('seed', range(4))
def test_sentiment_auc_and_rmse_match_sklearn(seed):
  sk = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(seed)
  n = int(rng.integers(20, 300))
  labels = np.round(rng.uniform(-3.4, 3.4, n) * 2) / 2
  labels[rng.random(n) < 0.15] = 0.0
  preds = np.round(labels + rng.normal(size=n), 1)  # Ties.
  got = metrics.sentiment_auc(preds, labels)
  non0 = labels != 0
  assert abs(got['Has0_AUC'] - sk.roc_auc_score(labels >= 0, preds)) <= 1e-12
  assert abs(got['Non0_AUC'] - sk.roc_auc_score(labels[non0] > 0, preds[non0])) <= 1e-12
  want_rmse = math.sqrt(sk.mean_squared_error(labels, preds))
  assert abs(metrics.rmse(preds, labels) - want_rmse) <= 1e-12
  assert math.isnan(metrics.sentiment_auc([0.5, -1.0], [0.0, 0.0])['Non0_AUC'])


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize('seed', range(4))
def test_emotion_auc_matches_sklearn(seed):
  sk = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(seed)
  n, c = int(rng.integers(30, 200)), 7
  labels = rng.integers(0, c, n)
  labels[:c] = np.arange(c)  # every class present.
  probs = _softmax(rng.normal(size=(n, c)) + 2 * np.eye(c)[labels] * rng.random((n, 1)))
  if seed % 2:
    probs = np.round(probs, 2)  # Ties (rows no longer sum to 1 exactly: renormalise).
    probs = probs / probs.sum(-1, keepdims=True)
  got = metrics.emotion_auc(probs, labels)
  for average in ('macro', 'weighted'):
    want = sk.roc_auc_score(labels, probs, multi_class='ovr', average=average)
    assert abs(got[f'AUC_{average}'] - want) <= 1e-12, average


def test_emotion_auc_with_a_class_absent_from_the_truth():
  """Class 2 is never true: its AUC is undefined and left out of both means (sklearn's own
  per-class AUC is NaN there and its macro mean NaN)."""
  sk = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(0)
  labels = rng.choice([0, 1, 3], 60)
  probs = _softmax(rng.normal(size=(60, 4)))
  got = metrics.emotion_auc(probs, labels)
  present = [0, 1, 3]
  per_class = [sk.roc_auc_score(labels == k, probs[:, k]) for k in present]
  support = [np.sum(labels == k) for k in present]
  assert got['AUC_macro'] == pytest.approx(np.mean(per_class), abs=1e-12)
  assert got['AUC_weighted'] == pytest.approx(np.average(per_class, weights=support), abs=1e-12)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    sk_per_class = sk.roc_auc_score(
      np.eye(4)[labels], probs, average=None
    )  # multilabel form: one binary AUC per column.
  assert math.isnan(sk_per_class[2])
  np.testing.assert_allclose(sk_per_class[present], per_class, atol=1e-12)
  one_class = metrics.emotion_auc(probs[:5], np.zeros(5, int))
  assert math.isnan(one_class['AUC_macro']) and math.isnan(one_class['AUC_weighted'])


def test_iemocap_auc_matches_sklearn():
  sk = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(3)
  labels = (rng.random((80, 4)) < 0.3).astype(int)
  labels[:, 1] = 0  # Happy absent everywhere: NaN, left out of the mean.
  probs = _softmax(rng.normal(size=(80, 4, 2)) + 1.5 * np.eye(2)[labels])
  got = metrics.iemocap_auc(probs, labels)
  assert list(got) == ['Neutral_AUC', 'Happy_AUC', 'Sad_AUC', 'Angry_AUC', 'Mean_AUC']
  want = [sk.roc_auc_score(labels[:, i], probs[:, i, 1]) for i in (0, 2, 3)]
  assert [got[k] for k in ('Neutral_AUC', 'Sad_AUC', 'Angry_AUC')] == pytest.approx(want, abs=1e-12)
  assert math.isnan(got['Happy_AUC'])
  assert got['Mean_AUC'] == pytest.approx(np.mean(want), abs=1e-12)
  # One-hot labels give the same.
  assert metrics.iemocap_auc(probs, np.eye(2)[labels]) == pytest.approx(got, nan_ok=True)


def test_weighted_accuracy_hand_case():
  # truth 1 1 0 0 0, pred 1 0 0 0 1: P 2, N 3, TP 1, TN 2 -> (1 * 3/2 + 2) / 6 = 7/12.
  assert metrics.weighted_accuracy([1, 1, 0, 0, 0], [1, 0, 0, 0, 1]) == pytest.approx(7 / 12)
  assert math.isnan(metrics.weighted_accuracy([1, 1], [1, 0]))


MOSEI_INTENSITIES = np.array(
  [  # happy, sad, anger, surprise, disgust, fear
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.3, 0.0, 2.0, 0.0, 0.0, 0.0],
    [0.0, 0.6, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 1.3, 0.0],
  ]
)
MOSEI_PROBS = np.array(
  [
    [0.9, 0.2, 0.1, 0.4, 0.1, 0.2],
    [0.4, 0.7, 0.6, 0.2, 0.3, 0.5],  # 0.5 is not > 0.5: fear predicted absent.
    [0.6, 0.8, 0.2, 0.1, 0.2, 0.1],
    [0.1, 0.3, 0.3, 0.3, 0.9, 0.3],
  ]
)


def test_mosei_emotion_metrics_hand_case():
  got = metrics.mosei_emotion_metrics(MOSEI_PROBS, MOSEI_INTENSITIES)
  assert list(got)[:3] == ['happy_WA', 'happy_F1', 'happy_AUC']
  assert list(got)[-3:] == ['Mean_WA', 'Mean_F1', 'Mean_AUC']
  # happy: truth T T F F, pred T F T F. P 2, N 2, TP 1, TN 1 -> WA (1 * 2/2 + 1) / 4 = 1/2.
  # F1: class T 2TP/(true+pred) = 2/4, class F 2/4 -> 1/2. AUC: positives 0.9, 0.4 vs negatives
  # 0.6, 0.1: (0.9 > both) 2 + (0.4 > 0.1) 1 = 3/4.
  assert (got['happy_WA'], got['happy_F1'], got['happy_AUC']) == pytest.approx((0.5, 0.5, 0.75))
  # sad: truth F F T F, pred F T T F. P 1, N 3, TP 1, TN 2 -> (1 * 3 + 2) / 6 = 5/6.
  # F1: T: 2/(1 + 2) = 2/3, weight 1; F: TN 2 -> 2*2/(3 + 2) = 4/5, weight 3 -> (2/3 + 12/5)/4
  # = 23/30. AUC: 0.8 above 0.2, 0.7, 0.3 -> 1.
  assert (got['sad_WA'], got['sad_F1'], got['sad_AUC']) == pytest.approx((5 / 6, 23 / 30, 1.0))
  # surprise is never present: WA and AUC undefined (NaN), F1 defined (all absent, predicted
  # absent -> 1).
  assert math.isnan(got['surprise_WA']) and math.isnan(got['surprise_AUC'])
  assert got['surprise_F1'] == 1.0
  # fear likewise never present.
  assert math.isnan(got['fear_WA'])
  # anger: truth F T F F, pred F T F F -> WA 1, F1 1, AUC 1; disgust the same.
  assert got['anger_WA'] == got['disgust_WA'] == 1.0
  # Means over the defined emotions: WA over happy, sad, anger, disgust.
  assert got['Mean_WA'] == pytest.approx((0.5 + 5 / 6 + 1 + 1) / 4)
  assert got['Mean_F1'] == pytest.approx(np.mean([got[f'{e}_F1'] for e in MOSEI_EMOTIONS]))


@pytest.mark.parametrize('seed', range(3))
def test_mosei_emotion_metrics_match_sklearn(seed):
  sk = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(seed)
  n = int(rng.integers(30, 300))
  intensities = np.where(rng.random((n, 6)) < 0.3, rng.choice([0.33, 0.67, 1.0, 2.0, 3.0]), 0.0)
  intensities[0], intensities[1] = 1.0, 0.0  # Both classes of every emotion present.
  probs = np.round(1 / (1 + np.exp(-(rng.normal(size=(n, 6)) + (intensities > 0)))), 2)
  got = metrics.mosei_emotion_metrics(probs, intensities)
  for i, e in enumerate(MOSEI_EMOTIONS):
    truth, pred = intensities[:, i] > 0, probs[:, i] > 0.5
    assert abs(got[f'{e}_WA'] - sk.balanced_accuracy_score(truth, pred)) <= 1e-12
    assert abs(got[f'{e}_F1'] - sk.f1_score(truth, pred, average='weighted')) <= 1e-12
    assert abs(got[f'{e}_AUC'] - sk.roc_auc_score(truth, probs[:, i])) <= 1e-12
  for kind in ('WA', 'F1', 'AUC'):
    assert got[f'Mean_{kind}'] == pytest.approx(
      np.mean([got[f'{e}_{kind}'] for e in MOSEI_EMOTIONS])
    )


def test_mosei_emotions_task():
  task = tasks.get_task('mosei_emotions', 6, MOSEI_EMOTIONS)
  assert task.output_units == 6 and task.key_metrics == ('Mean_WA', 'Mean_F1')
  logits = np.array([[2.0, -1.0, 0.0, 0.5, -3.0, 1.0]], np.float32)
  target = np.array([[1.5, 0.0, 0.33, 0.0, 0.0, 2.0]], np.float32)
  loss = np.asarray(task.per_example_loss(task.shape_output(logits), target))
  present = (target > 0).astype(np.float64)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  want = -np.mean(present * np.log(p) + (1 - present) * np.log(1 - p), axis=-1)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  probs = np.asarray(task.host_output(logits))[0]
  np.testing.assert_allclose(probs, p[0], rtol=1e-6)
  row = task.prediction_row(probs, target[0])
  assert row['prediction'] == [1, 0, 0, 1, 0, 1] and row['label'] == [1, 0, 1, 0, 0, 1]
  assert row['probabilities'] == [float(x) for x in probs]
  assert row['intensities'] == [float(x) for x in target[0]]
  described = task.describe(probs)
  assert described['prediction'] == ['happy', 'surprise', 'fear']
  assert described['probabilities']['happy'] == pytest.approx(p[0, 0])
  # The metrics recomputed from prediction rows (labels 0/1) equal those of the intensities.
  rows = [task.prediction_row(a, b) for a, b in zip(MOSEI_PROBS, MOSEI_INTENSITIES)]
  again = task.metrics(np.array([r['probabilities'] for r in rows]), [r['label'] for r in rows])
  assert again == pytest.approx(task.metrics(MOSEI_PROBS, MOSEI_INTENSITIES), nan_ok=True)
