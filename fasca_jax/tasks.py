"""One Task per task: everything that differs between sentiment regression, emotion
classification and IEMOCAP's four binary emotions lives here (Scenic's task classes). The head,
the loss, evaluation, curves, predictions and predict.py ask the Task; nothing else branches on
the task's name.

  task            head output          target                    host output (eval, predict)
  regression      (B,) sentiment       (B,) float in [-3, 3]     (B,) the prediction
  classification  (B, C) logits        (B,) int class in [0, C)  (B, C) probabilities
  iemocap         (B, 4, 2) logits     (B, 4) int in {0, 1}      (B, 4, 2) probabilities
  mosei_emotions  (B, 6) logits        (B, 6) float intensities  (B, 6) P(present) (sigmoid)

Losses follow the field: L1 for sentiment (MMSA), cross-entropy for classes, the mean over the
four emotions of a 2-way cross-entropy for IEMOCAP (MulT), the mean over the six emotions of a
binary cross-entropy (sigmoid) against presence (intensity > 0) for CMU-MOSEI emotions (Dai et
al. 2021). Metrics are `fasca_jax.metrics`; `metrics_convention` ('mmsa' or 'mult', from
`config.metrics_convention`) adds MulT's sentiment metrics to MMSA's when 'mult'.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fasca_jax import label_names
from fasca_jax import metrics


@dataclasses.dataclass(frozen=True)
class Task:
  """A task with `num_classes` classes (1 for regression) named `class_names` (may be empty).

  Frozen and hashable, so a Flax module can hold it as an attribute.
  """

  num_classes: int = 1
  class_names: tuple[str, ...] = ()
  metrics_convention: str = 'mmsa'

  name: ClassVar[str]
  # The metrics the field reports first: curves draw them, TensorBoard's HParams list them.
  key_metrics: ClassVar[tuple[str, ...]]

  def __post_init__(self):
    if self.metrics_convention not in METRICS_CONVENTIONS:
      raise ValueError(
        f'config.metrics_convention={self.metrics_convention!r}: expected one of '
        f"{METRICS_CONVENTIONS} (mmsa: MMSA's sentiment metrics; mult: adds MulT's beside them)"
      )

  @property
  def output_units(self) -> int:
    """Width of the head's last Dense layer."""
    raise NotImplementedError

  def shape_output(self, y: jax.Array) -> jax.Array:
    """y: (B, output_units) -> the task's head output (module docstring), float32."""
    raise NotImplementedError

  def per_example_loss(self, y: jax.Array, target: jax.Array) -> jax.Array:
    """Head output and target (module docstring) -> (B,) float32 losses."""
    raise NotImplementedError

  def host_output(self, y: jax.Array) -> jax.Array:
    """What evaluation reads back: the prediction (regression) or the class probabilities."""
    return jax.nn.softmax(y, axis=-1)

  def metrics(self, output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The field's metrics of N host outputs against their N targets."""
    raise NotImplementedError

  def prediction_row(self, output: np.ndarray, target: np.ndarray) -> dict:
    """One example's `prediction`, `label` (and `probabilities`) as JSON values."""
    return {
      'prediction': np.argmax(output, axis=-1).tolist(),
      'label': np.asarray(target).astype(int).tolist(),
      'probabilities': np.asarray(output).tolist(),
    }

  def describe(self, output: np.ndarray) -> dict:
    """The prediction of one new example (predict.py), JSON-ready."""
    raise NotImplementedError


class Regression(Task):
  """Sentiment regression (CMU-MOSI / MOSEI): MMSA's metrics, then RMSE, Has0_AUC and Non0_AUC,
  then with the 'mult' convention MulT's (`metrics.mult_sentiment_metrics`)."""

  name = 'regression'
  key_metrics = ('Has0_acc_2', 'Has0_F1_score')

  @property
  def output_units(self) -> int:
    return 1

  def shape_output(self, y):
    return y.astype(jnp.float32)[:, 0]

  def per_example_loss(self, y, target):
    return jnp.abs(y - target.astype(jnp.float32))

  def host_output(self, y):
    return y

  def metrics(self, output, target):
    results = metrics.sentiment_metrics(output, target)
    results['RMSE'] = metrics.rmse(output, target)
    results.update(metrics.sentiment_auc(output, target))
    if self.metrics_convention == 'mult':
      results.update(metrics.mult_sentiment_metrics(output, target))
    return results

  def prediction_row(self, output, target):
    return {'prediction': float(output), 'label': float(target)}

  def describe(self, output):
    """{'score': s, 'sentiment': 'positive' if s >= 0 else 'negative'} (MMSA's Has0 split)."""
    score = float(output)
    return {'score': score, 'sentiment': 'positive' if score >= 0 else 'negative'}


class Classification(Task):
  """Single-label classification (MELD emotions): accuracy, weighted and macro F1, one-vs-rest
  ROC-AUC (macro and weighted)."""

  name = 'classification'
  key_metrics = ('Acc', 'F1_weighted')

  @property
  def output_units(self) -> int:
    return self.num_classes

  def shape_output(self, y):
    return y.astype(jnp.float32)

  def per_example_loss(self, y, target):
    return optax.softmax_cross_entropy_with_integer_labels(y, target.astype(jnp.int32))

  def metrics(self, output, target):
    return {**metrics.emotion_metrics(output, target), **metrics.emotion_auc(output, target)}

  def describe(self, output):
    """{'prediction': name of the argmax, 'probabilities': {name: p}} (class_<i> unnamed)."""
    names = self.class_names or tuple(f'class_{i}' for i in range(self.num_classes))
    return {
      'prediction': names[int(np.argmax(output))],
      'probabilities': {n: float(p) for n, p in zip(names, output)},
    }


class Iemocap(Task):
  """IEMOCAP: four binary emotions (Neutral, Happy, Sad, Angry), MulT's metrics, then ROC-AUC
  per emotion and its mean."""

  name = 'iemocap'
  key_metrics = ('Mean_acc', 'Mean_F1')

  @property
  def output_units(self) -> int:
    return 2 * len(label_names.IEMOCAP_EMOTIONS)

  def shape_output(self, y):
    return y.astype(jnp.float32).reshape(y.shape[0], len(label_names.IEMOCAP_EMOTIONS), 2)

  def per_example_loss(self, y, target):
    return optax.softmax_cross_entropy_with_integer_labels(y, target.astype(jnp.int32)).mean(-1)

  def metrics(self, output, target):
    return {**metrics.iemocap_metrics(output, target), **metrics.iemocap_auc(output, target)}

  def describe(self, output):
    """{'prediction': the emotions present (P > 0.5), 'probabilities': {emotion: P(present)}}."""
    present = {e: float(p[1]) for e, p in zip(label_names.IEMOCAP_EMOTIONS, output)}
    return {'prediction': [e for e, p in present.items() if p > 0.5], 'probabilities': present}


class MoseiEmotions(Task):
  """CMU-MOSEI emotions: six binary emotions (happy, sad, anger, surprise, disgust, fear), present
  when their intensity is > 0, multi-label; per-emotion weighted accuracy, F1 and ROC-AUC and
  their means (`metrics.mosei_emotion_metrics`: definitions and papers)."""

  name = 'mosei_emotions'
  key_metrics = ('Mean_WA', 'Mean_F1')

  @property
  def output_units(self) -> int:
    return len(label_names.MOSEI_EMOTIONS)

  def shape_output(self, y):
    return y.astype(jnp.float32)

  def per_example_loss(self, y, target):
    present = (target > metrics.PRESENT_INTENSITY).astype(jnp.float32)
    return optax.sigmoid_binary_cross_entropy(y, present).mean(-1)

  def host_output(self, y):
    return jax.nn.sigmoid(y)

  def metrics(self, output, target):
    return metrics.mosei_emotion_metrics(output, target)

  def prediction_row(self, output, target):
    """`prediction` and `label`: 6 ints (present = 1), `probabilities`: 6 P(present),
    `intensities`: the 6 annotated intensities."""
    return {
      'prediction': (np.asarray(output) > metrics.PRESENT_PROBABILITY).astype(int).tolist(),
      'label': (np.asarray(target) > metrics.PRESENT_INTENSITY).astype(int).tolist(),
      'probabilities': np.asarray(output).tolist(),
      'intensities': np.asarray(target).tolist(),
    }

  def describe(self, output):
    """{'prediction': the emotions present (P > 0.5), 'probabilities': {emotion: P(present)}}."""
    present = {e: float(p) for e, p in zip(label_names.MOSEI_EMOTIONS, output)}
    return {
      'prediction': [e for e, p in present.items() if p > metrics.PRESENT_PROBABILITY],
      'probabilities': present,
    }


TASKS = {t.name: t for t in (Regression, Classification, Iemocap, MoseiEmotions)}
METRICS_CONVENTIONS = ('mmsa', 'mult')


def get_task(
  name: str,
  num_classes: int = 1,
  class_names: tuple[str, ...] = (),
  metrics_convention: str = 'mmsa',
) -> Task:
  """The Task called `name` ('regression', 'classification', 'iemocap' or 'mosei_emotions')."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}: expected one of {sorted(TASKS)}')
  return TASKS[name](
    num_classes=int(num_classes),
    class_names=tuple(class_names),
    metrics_convention=metrics_convention,
  )


def from_config(config) -> Task:
  """The Task of a run config: `task`, `num_classes`, `metrics_convention` ('mmsa' when a saved
  config predates it), and the class names of the dataset's `target_key` where they are known
  and as many as the classes."""
  names = label_names.CLASS_NAMES.get((config.dataset.name, config.target_key), ())
  return get_task(
    config.task,
    config.num_classes,
    names if len(names) == config.num_classes else (),
    config.get('metrics_convention', 'mmsa'),
  )
