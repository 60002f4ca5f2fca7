"""Evaluation metrics, host-side NumPy.

* `sentiment_metrics`: CMU-MOSI / CMU-MOSEI regression, the definitions of
  MMSA's `metricsTop.py` (`__eval_mosei_regression`), without its rounding.
* `emotion_metrics`: single-label emotion classification (MELD convention).
* `iemocap_metrics`: IEMOCAP four binary emotions (MulT `eval_iemocap`).
* `accuracy`, `weighted_f1`, `macro_f1`: scikit-learn's `accuracy_score` and
  `f1_score(average='weighted' | 'macro', zero_division=0)`, in NumPy.

All metrics are returned as full-precision Python floats; rounding to 4
decimals is presentation only and happens in `format_table`.
"""

import warnings

import numpy as np

from fasca_jax.label_names import IEMOCAP_EMOTIONS


def _check_array(x, name):
  """Raises ValueError if the array `x` (any shape) is empty or has NaN/inf."""
  if x.size == 0:
    raise ValueError(f'{name} is empty (shape {x.shape}).')
  # Only float (or complex) arrays can hold non-finite values.
  if x.dtype.kind in 'fc' and not np.isfinite(x).all():
    n_bad = x.size - np.count_nonzero(np.isfinite(x))
    raise ValueError(f'{name} has {n_bad} non-finite value(s) (shape {x.shape}).')


def _check_pair(preds, labels, preds_name='preds', labels_name='labels'):
  """Validates a (preds, labels) pair of equal shape.

  Args:
    preds: array-like, any shape S.
    labels: array-like, shape S.
    preds_name: name of `preds` in error messages.
    labels_name: name of `labels` in error messages.

  Returns:
    (preds, labels) as NumPy arrays of shape S.

  Raises:
    ValueError: on different shapes, empty arrays or non-finite values.
  """
  preds, labels = np.asarray(preds), np.asarray(labels)
  if preds.shape != labels.shape:
    raise ValueError(
      f'{preds_name} and {labels_name} must have the same shape, got '
      f'{preds_name} {preds.shape} and {labels_name} {labels.shape}.'
    )
  _check_array(preds, preds_name)
  _check_array(labels, labels_name)
  return preds, labels


def _class_f1(y_true, y_pred, classes):
  """One-vs-rest F1 of each class, 0 where the class is in neither array.

  Args:
    y_true: (N,) true class labels.
    y_pred: (N,) predicted class labels.
    classes: (K,) the classes to score.

  Returns:
    (f1, support): (K,) float64 F1 = 2TP / (2TP + FP + FN) and (K,) int
    number of occurrences of each class in `y_true`.
  """
  is_true = y_true[:, None] == classes[None, :]  # (N, K)
  is_pred = y_pred[:, None] == classes[None, :]  # (N, K)
  tp = np.sum(is_true & is_pred, axis=0)
  support = np.sum(is_true, axis=0)
  denom = support + np.sum(is_pred, axis=0)  # 2TP + FP + FN.
  f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
  return f1, support


def _present_class_f1(y_true, y_pred):
  """Validated F1 and support over the classes present in either array.

  Args:
    y_true: array-like (any shape S) of true class labels.
    y_pred: array-like (shape S) of predicted class labels.

  Returns:
    (f1, support): (K,) each, for the K sorted classes of the union.
  """
  y_pred, y_true = _check_pair(y_pred, y_true, 'y_pred', 'y_true')
  y_true, y_pred = y_true.reshape(-1), y_pred.reshape(-1)
  return _class_f1(y_true, y_pred, np.union1d(y_true, y_pred))


def accuracy(y_true, y_pred) -> float:
  """Fraction of exact matches.

  Args:
    y_true: array-like, any shape S.
    y_pred: array-like, shape S.

  Returns:
    float in [0, 1].
  """
  y_pred, y_true = _check_pair(y_pred, y_true, 'y_pred', 'y_true')
  return float(np.mean(y_true == y_pred))


def weighted_f1(y_true, y_pred) -> float:
  """Support-weighted mean of per-class F1 (sklearn `average='weighted'`).

  The classes are the union of those in `y_true` and `y_pred`; a class only
  predicted has F1 = 0 and weight 0 (zero_division=0).

  Args:
    y_true: array-like of class labels, any shape S.
    y_pred: array-like of class labels, shape S.

  Returns:
    float in [0, 1].
  """
  f1, support = _present_class_f1(y_true, y_pred)
  return float(np.average(f1, weights=support))


def macro_f1(y_true, y_pred) -> float:
  """Unweighted mean of per-class F1 (sklearn `average='macro'`).

  The classes are the union of those in `y_true` and `y_pred`, so a class
  only predicted counts with F1 = 0 (zero_division=0).

  Args:
    y_true: array-like of class labels, any shape S.
    y_pred: array-like of class labels, shape S.

  Returns:
    float in [0, 1].
  """
  f1, _ = _present_class_f1(y_true, y_pred)
  return float(np.mean(f1))


def _pearson(x, y):
  """np.corrcoef(x, y)[0, 1] of (N,) arrays; NaN if x or y is constant."""
  # Constant input (or N == 1) is 0/0 in np.corrcoef; silence its warnings.
  with np.errstate(divide='ignore', invalid='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    return float(np.corrcoef(x, y)[0, 1])


def _multiclass_acc(preds, labels, bound):
  """Accuracy of np.round (half to even) after clipping both to +-bound.

  Args:
    preds: (N,) float64.
    labels: (N,) float64.
    bound: clip range [-bound, bound].

  Returns:
    float in [0, 1].
  """
  return accuracy(np.round(np.clip(labels, -bound, bound)), np.round(np.clip(preds, -bound, bound)))


def sentiment_metrics(preds, labels) -> dict[str, float]:
  """CMU-MOSI / MOSEI regression metrics (MMSA `__eval_mosei_regression`).

  * Has0_*: truth `labels >= 0` vs `preds >= 0`, all samples.
  * Non0_*: truth `labels > 0` vs `preds > 0`, samples with `labels != 0`;
    NaN when every label is exactly 0.
  * Mult_acc_7 / Mult_acc_5: clip both to [-3, 3] / [-2, 2], then
    np.round (half to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2) and compare.
  * MAE, Corr: on unclipped values; Corr is Pearson's r (np.corrcoef), NaN
    when preds or labels are constant.
  F1 scores are support-weighted (`weighted_f1`).

  Args:
    preds: array-like, N values in any shape (e.g. (N,) or (N, 1)).
    labels: array-like, N values, same shape as `preds` up to size-1 axes.

  Returns:
    dict of Python floats, keys in the order Has0_acc_2, Has0_F1_score,
    Non0_acc_2, Non0_F1_score, Mult_acc_5, Mult_acc_7, MAE, Corr.
  """
  preds, labels = np.asarray(preds), np.asarray(labels)
  if np.squeeze(preds).shape != np.squeeze(labels).shape:
    raise ValueError(
      'preds and labels must have the same shape up to size-1 axes, got '
      f'preds {preds.shape} and labels {labels.shape}.'
    )
  preds, labels = _check_pair(
    preds.reshape(-1).astype(np.float64), labels.reshape(-1).astype(np.float64)
  )
  non0 = labels != 0
  if np.any(non0):
    non0_acc = accuracy(labels[non0] > 0, preds[non0] > 0)
    non0_f1 = weighted_f1(labels[non0] > 0, preds[non0] > 0)
  else:
    non0_acc = non0_f1 = float('nan')
  return {
    'Has0_acc_2': accuracy(labels >= 0, preds >= 0),
    'Has0_F1_score': weighted_f1(labels >= 0, preds >= 0),
    'Non0_acc_2': non0_acc,
    'Non0_F1_score': non0_f1,
    'Mult_acc_5': _multiclass_acc(preds, labels, 2.0),
    'Mult_acc_7': _multiclass_acc(preds, labels, 3.0),
    'MAE': float(np.mean(np.abs(preds - labels))),
    'Corr': _pearson(preds, labels),
  }


def _to_class_ids(logits, labels, logits_name):
  """Checks logits against labels and turns both into class ids.

  Args:
    logits: array-like (..., C) scores (logits or probabilities).
    labels: array-like of shape (...) integer class ids in [0, C), or
      (..., C) one-hot.
    logits_name: name of `logits` in error messages.

  Returns:
    (pred_ids, label_ids), both int arrays of shape (...).
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  if logits.ndim < 2:
    raise ValueError(f'{logits_name} must have shape (..., num_classes), got {logits.shape}.')
  if labels.shape not in (logits.shape, logits.shape[:-1]):
    raise ValueError(
      f'labels must have shape {logits.shape[:-1]} (class ids) or '
      f'{logits.shape} (one-hot) to match {logits_name} {logits.shape}, '
      f'got labels {labels.shape}.'
    )
  _check_array(logits, logits_name)
  _check_array(labels, 'labels')
  if labels.shape == logits.shape:
    labels = np.argmax(labels, axis=-1)
  elif np.any((labels < 0) | (labels >= logits.shape[-1]) | (labels != np.round(labels))):
    raise ValueError(
      f'labels must be integer class ids in [0, {logits.shape[-1]}), '
      f'got values in [{labels.min()}, {labels.max()}] '
      f'(labels {labels.shape}, {logits_name} {logits.shape}).'
    )
  return np.argmax(logits, axis=-1), labels.astype(np.int64)


def emotion_metrics(logits_or_probs, labels, class_names=None) -> dict[str, float]:
  """Single-label classification metrics (MELD: Acc and weighted F1).

  Args:
    logits_or_probs: array-like (N, C) class scores; prediction = argmax.
    labels: array-like (N,) integer class ids in [0, C), or (N, C) one-hot.
    class_names: optional C names; adds `F1_<name>`, the one-vs-rest F1 of
      each class (0 for a class neither true nor predicted).

  Returns:
    dict of Python floats: Acc, F1_weighted, F1_macro[, F1_<name>...]. The
    weighted / macro means run over the classes present in truth or preds.
  """
  preds, labels = _to_class_ids(logits_or_probs, labels, 'logits_or_probs')
  preds, labels = preds.reshape(-1), labels.reshape(-1)
  results = {
    'Acc': accuracy(labels, preds),
    'F1_weighted': weighted_f1(labels, preds),
    'F1_macro': macro_f1(labels, preds),
  }
  if class_names is not None:
    num_classes = np.shape(logits_or_probs)[-1]
    if len(class_names) != num_classes:
      raise ValueError(
        f'class_names has {len(class_names)} names, logits_or_probs has '
        f'{num_classes} classes (shape {np.shape(logits_or_probs)}).'
      )
    f1, _ = _class_f1(labels, preds, np.arange(num_classes))
    results.update({f'F1_{name}': float(v) for name, v in zip(class_names, f1)})
  return results


def iemocap_metrics(logits, labels) -> dict[str, float]:
  """IEMOCAP per-emotion binary metrics (MulT `eval_iemocap`).

  Args:
    logits: array-like (N, 4, 2) scores for (absent, present) of the
      emotions Neutral, Happy, Sad, Angry.
    labels: array-like (N, 4) ints in {0, 1}, or (N, 4, 2) one-hot.

  Returns:
    dict of Python floats: <Emotion>_acc and <Emotion>_F1 (weighted F1 of
    the argmax over the 2 scores) for each emotion, then Mean_acc and
    Mean_F1, the means over the 4 emotions.
  """
  logits = np.asarray(logits)
  if logits.ndim != 3 or logits.shape[1:] != (len(IEMOCAP_EMOTIONS), 2):
    raise ValueError(f'logits must have shape (N, 4, 2), got {logits.shape}.')
  preds, labels = _to_class_ids(logits, labels, 'logits')  # (N, 4) each.
  results = {}
  for i, emotion in enumerate(IEMOCAP_EMOTIONS):
    results[f'{emotion}_acc'] = accuracy(labels[:, i], preds[:, i])
    results[f'{emotion}_F1'] = weighted_f1(labels[:, i], preds[:, i])
  results['Mean_acc'] = float(np.mean([results[f'{e}_acc'] for e in IEMOCAP_EMOTIONS]))
  results['Mean_F1'] = float(np.mean([results[f'{e}_F1'] for e in IEMOCAP_EMOTIONS]))
  return results


def format_table(results: dict[str, dict[str, float]]) -> str:
  """Renders split -> metric -> value as an aligned plain-text table.

  Rows are metrics (in first-seen order over the splits), columns are
  splits, values have 4 decimals; a metric a split lacks shows as '-'.

  Args:
    results: dict split name -> dict metric name -> float.

  Returns:
    The table as a string, one line per row, no trailing newline.
  """
  splits = list(results)
  metrics = list(dict.fromkeys(m for s in splits for m in results[s]))
  rows = [['metric'] + splits]
  for m in metrics:
    rows.append([m] + [f'{results[s][m]:.4f}' if m in results[s] else '-' for s in splits])
  widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
  return '\n'.join(
    '  '.join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
    for row in rows
  )
