"""Evaluation metrics, host-side NumPy.

* `sentiment_metrics`: CMU-MOSI / CMU-MOSEI regression, the definitions of
  MMSA's `metricsTop.py` (`__eval_mosei_regression`), without its rounding;
  `rmse` and `sentiment_auc` (Has0 / Non0 splits scored by the prediction)
  next to them; `mult_sentiment_metrics`, MulT's `eval_mosei_senti`.
* `emotion_metrics`: single-label emotion classification (MELD convention);
  `emotion_auc`, one-vs-rest ROC-AUC (macro and weighted).
* `iemocap_metrics`: IEMOCAP four binary emotions (MulT `eval_iemocap`);
  `iemocap_auc`, ROC-AUC per emotion and mean.
* `mosei_emotion_metrics`: CMU-MOSEI six emotions, multi-label (weighted
  accuracy, F1 and ROC-AUC per emotion, and their means).
* `accuracy`, `weighted_f1`, `macro_f1`, `roc_auc`: scikit-learn's
  `accuracy_score`, `f1_score(average='weighted' | 'macro', zero_division=0)`
  and binary `roc_auc_score`, in NumPy.

ROC-AUC is undefined when the truth holds one class only: `roc_auc` returns
NaN then (as scikit-learn 1.9's `roc_auc_score` does, with a warning), and
every mean of AUCs here (macro, weighted, Mean_AUC) runs over the
classes or emotions whose AUC is defined, NaN when none is (scikit-learn's
macro would be NaN as soon as one class is absent).

All metrics are returned as full-precision Python floats; rounding to 4
decimals is presentation only and happens in `format_table`.
"""

import warnings

import numpy as np

from fasca_jax.label_names import IEMOCAP_EMOTIONS
from fasca_jax.label_names import MOSEI_EMOTIONS

# MOSEI emotions: present when the intensity exceeds this; predicted present when P(present)
# exceeds PRESENT_PROBABILITY (sigmoid > 0.5, Dai et al. 2021).
PRESENT_INTENSITY = 0.0
PRESENT_PROBABILITY = 0.5


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


def roc_auc(y_true, scores) -> float:
  """Area under the ROC curve of binary `y_true` scored by `scores` (sklearn
  `roc_auc_score`): the probability that a random positive scores higher than
  a random negative, ties counting 1/2 (Mann-Whitney U with average ranks).

  Args:
    y_true: array-like of bools (or 0/1), any shape S.
    scores: array-like of floats, shape S.

  Returns:
    float in [0, 1]; NaN when `y_true` has no positive or no negative.
  """
  scores, y_true = _check_pair(scores, y_true, 'scores', 'y_true')
  positive = y_true.reshape(-1).astype(bool)
  scores = scores.reshape(-1).astype(np.float64)
  num_pos = int(positive.sum())
  num_neg = positive.size - num_pos
  if not num_pos or not num_neg:
    return float('nan')
  _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
  average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, averaged over ties.
  rank_sum = average_rank[group][positive].sum()
  return float((rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def _mean_defined(values, weights=None) -> float:
  """(Weighted) mean of the non-NaN `values`; NaN when every value is NaN."""
  values = np.asarray(values, np.float64)
  defined = ~np.isnan(values)
  if not defined.any():
    return float('nan')
  w = None if weights is None else np.asarray(weights, np.float64)[defined]
  return float(np.average(values[defined], weights=w))


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


def _sentiment_pair(preds, labels):
  """(N,) float64 preds and labels, checked as `sentiment_metrics` checks them."""
  preds, labels = np.asarray(preds), np.asarray(labels)
  if np.squeeze(preds).shape != np.squeeze(labels).shape:
    raise ValueError(
      'preds and labels must have the same shape up to size-1 axes, got '
      f'preds {preds.shape} and labels {labels.shape}.'
    )
  return _check_pair(preds.reshape(-1).astype(np.float64), labels.reshape(-1).astype(np.float64))


def rmse(preds, labels) -> float:
  """Root mean squared error sqrt(mean((preds - labels)^2)) on unclipped values.

  Args:
    preds, labels: array-like, N values each (shapes as `sentiment_metrics`).
  """
  preds, labels = _sentiment_pair(preds, labels)
  return float(np.sqrt(np.mean((preds - labels) ** 2)))


def sentiment_auc(preds, labels) -> dict[str, float]:
  """ROC-AUC of MMSA's two binary sentiment splits, scored by the raw prediction.

  * Has0_AUC: truth `labels >= 0`, all samples.
  * Non0_AUC: truth `labels > 0`, samples with `labels != 0`.
  Each is NaN when its truth holds one class only (`roc_auc`).

  Args:
    preds, labels: array-like, N values each (shapes as `sentiment_metrics`).
  """
  preds, labels = _sentiment_pair(preds, labels)
  non0 = labels != 0
  return {
    'Has0_AUC': roc_auc(labels >= 0, preds),
    'Non0_AUC': roc_auc(labels[non0] > 0, preds[non0]) if non0.any() else float('nan'),
  }


def mult_sentiment_metrics(preds, labels) -> dict[str, float]:
  """MulT's binary sentiment metrics (`eval_mosei_senti` of yaohungt/Multimodal-Transformer).

  MulT calls `f1_score(preds > 0, truth > 0, average='weighted')`: the
  arguments in (y_pred, y_true) order, so each class's F1 is weighted by its
  count among the *predictions*. Its accuracy is symmetric.
  * MulT_acc_2, MulT_F1_score: `exclude_zero=True`, as MulT's `train.py`
    reports them: samples with `labels != 0`, `preds > 0` vs `labels > 0`
    (MulT_acc_2 equals Non0_acc_2; MulT_F1_score is the swapped-argument F1);
    NaN when every label is 0.
  * MulT_acc_2_all, MulT_F1_score_all: `exclude_zero=False` (the function's
    default): all samples, `> 0` vs `<= 0`.
  MulT's MAE, Corr and Mult_acc_5/7 equal MMSA's (`sentiment_metrics`).

  Example (no zero label): preds [1, 1, 1, 1, -1, 1], labels [1, 1, 1, -1,
  -1, -1]: MulT_F1_score = (5 * 3/4 + 1 * 1/2) / 6 = 17/24 = 0.7083, where
  Non0_F1_score (sklearn order) = (3 * 3/4 + 3 * 1/2) / 6 = 0.625.

  Args:
    preds, labels: array-like, N values each (shapes as `sentiment_metrics`).
  """
  preds, labels = _sentiment_pair(preds, labels)
  non0 = labels != 0
  if non0.any():
    acc = accuracy(labels[non0] > 0, preds[non0] > 0)
    f1 = weighted_f1(preds[non0] > 0, labels[non0] > 0)  # MulT's argument order.
  else:
    acc = f1 = float('nan')
  return {
    'MulT_acc_2': acc,
    'MulT_F1_score': f1,
    'MulT_acc_2_all': accuracy(labels > 0, preds > 0),
    'MulT_F1_score_all': weighted_f1(preds > 0, labels > 0),
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


def emotion_auc(probs, labels) -> dict[str, float]:
  """One-vs-rest ROC-AUC of single-label classification (MELD).

  Class c's AUC scores `labels == c` by `probs[:, c]` (sklearn
  `roc_auc_score(..., multi_class='ovr')` per class). AUC_macro is their mean
  and AUC_weighted their mean weighted by each class's count in `labels`, both
  over the classes whose AUC is defined: a class absent from `labels` (or the
  only one present) has none and is left out.

  Args:
    probs: array-like (N, C) class probabilities (softmax; one-vs-rest ranks
      by a class's probability, not by its logit).
    labels: array-like (N,) integer class ids in [0, C), or (N, C) one-hot.

  Returns:
    {'AUC_macro', 'AUC_weighted'} Python floats, NaN when no class has an AUC.
  """
  _, labels = _to_class_ids(probs, labels, 'probs')
  probs = np.asarray(probs, np.float64).reshape(-1, np.shape(probs)[-1])
  labels = labels.reshape(-1)
  classes = np.arange(probs.shape[1])
  aucs = [roc_auc(labels == c, probs[:, c]) for c in classes]
  support = [np.sum(labels == c) for c in classes]
  return {'AUC_macro': _mean_defined(aucs), 'AUC_weighted': _mean_defined(aucs, support)}


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


def iemocap_auc(probs, labels) -> dict[str, float]:
  """IEMOCAP ROC-AUC per emotion: `labels == 1` scored by P(present).

  Args:
    probs: array-like (N, 4, 2) probabilities of (absent, present) of
      Neutral, Happy, Sad, Angry (the score is `probs[:, e, 1]`).
    labels: array-like (N, 4) ints in {0, 1}, or (N, 4, 2) one-hot.

  Returns:
    dict of Python floats: <Emotion>_AUC for each emotion (NaN when the
    emotion is present in every sample or in none), then Mean_AUC, the mean
    over the emotions with a defined AUC.
  """
  probs = np.asarray(probs)
  if probs.ndim != 3 or probs.shape[1:] != (len(IEMOCAP_EMOTIONS), 2):
    raise ValueError(f'probs must have shape (N, 4, 2), got {probs.shape}.')
  _, labels = _to_class_ids(probs, labels, 'probs')  # (N, 4)
  results = {
    f'{e}_AUC': roc_auc(labels[:, i] == 1, probs[:, i, 1]) for i, e in enumerate(IEMOCAP_EMOTIONS)
  }
  results['Mean_AUC'] = _mean_defined(list(results.values()))
  return results


def weighted_accuracy(y_true, y_pred) -> float:
  """Weighted accuracy of a binary task (Tong et al., ACL 2017), as the MOSEI emotion papers use
  it: WA = (TP * N / P + TN) / (2 * N) = (TPR + TNR) / 2, with P and N the numbers of positive
  and negative samples in `y_true`. Evaluated in that order (Dai et al. 2021's `weighted_acc`).

  Args:
    y_true: array-like of bools (or 0/1), any shape S.
    y_pred: array-like of bools (or 0/1), shape S.

  Returns:
    float in [0, 1]; NaN when `y_true` has no positive or no negative.
  """
  y_pred, y_true = _check_pair(y_pred, y_true, 'y_pred', 'y_true')
  truth, pred = y_true.reshape(-1).astype(bool), y_pred.reshape(-1).astype(bool)
  p, n = int(truth.sum()), int((~truth).sum())
  if not p or not n:
    return float('nan')
  tp, tn = int(np.sum(truth & pred)), int(np.sum(~truth & ~pred))
  return (tp * n / p + tn) / (2 * n)


def mosei_emotion_metrics(probs, intensities) -> dict[str, float]:
  """CMU-MOSEI emotion recognition, six emotions, multi-label.

  Definitions followed: Zadeh et al. (ACL 2018, CMU-MOSEI) report per emotion
  the weighted accuracy of Tong et al. (2017) and F1; the evaluation code of
  Dai et al. (NAACL 2021, "Multimodal End-to-End Sparse Model for Emotion
  Recognition", `eval_mosei_emo`) fixes the details used here, and adds the
  ROC-AUC and the means over the emotions. For emotion e, over N samples:
    truth_i = intensity_i,e > 0                      (present)
    pred_i  = P_i(e present) > 0.5                   (sigmoid of the logit)
    P = #truth, N_neg = #not truth, TP = #(truth and pred), TN = #(neither)
    <e>_WA  = (TP * N_neg / P + TN) / (2 * N_neg)    (= (TPR + TNR) / 2)
    <e>_F1  = sum over c in {present, absent} of n_c / N * F1_c
              (sklearn `f1_score(truth, pred, average='weighted')`)
    <e>_AUC = ROC-AUC of truth scored by P(e present)
  Mean_WA, Mean_F1, Mean_AUC are the unweighted means over the six emotions
  (over those with a defined value: WA and AUC are NaN for an emotion present
  in every sample or in none).

  Args:
    probs: array-like (N, 6) P(present) of happy, sad, anger, surprise,
      disgust, fear (`label_names.MOSEI_EMOTIONS`).
    intensities: array-like (N, 6) annotated intensities in [0, 3] (or 0/1
      presence labels, which give the same metrics).

  Returns:
    dict of Python floats: <e>_WA, <e>_F1, <e>_AUC for each emotion, then
    Mean_WA, Mean_F1, Mean_AUC.
  """
  probs, intensities = _check_pair(probs, intensities, 'probs', 'intensities')
  if probs.ndim != 2 or probs.shape[1] != len(MOSEI_EMOTIONS):
    raise ValueError(f'probs must have shape (N, 6), got {probs.shape}.')
  truth = intensities > PRESENT_INTENSITY
  pred = probs > PRESENT_PROBABILITY
  results = {}
  for i, e in enumerate(MOSEI_EMOTIONS):
    results[f'{e}_WA'] = weighted_accuracy(truth[:, i], pred[:, i])
    results[f'{e}_F1'] = weighted_f1(truth[:, i], pred[:, i])
    results[f'{e}_AUC'] = roc_auc(truth[:, i], probs[:, i])
  for kind in ('WA', 'F1', 'AUC'):
    results[f'Mean_{kind}'] = _mean_defined([results[f'{e}_{kind}'] for e in MOSEI_EMOTIONS])
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
