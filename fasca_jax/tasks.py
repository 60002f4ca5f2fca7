"""One Task per task: everything that differs between sentiment regression, emotion
classification and IEMOCAP's four binary emotions lives here (Scenic's task classes). The head,
the loss, evaluation, curves, predictions and predict.py ask the Task; nothing else branches on
the task's name.

  task            head output          target                    host output (eval, predict)
  regression      (B,) sentiment       (B,) float in [-3, 3]     (B,) the prediction
  classification  (B, C) logits        (B,) int class in [0, C)  (B, C) probabilities
  iemocap         (B, 4, 2) logits     (B, 4) int in {0, 1}      (B, 4, 2) probabilities

Losses follow the field: L1 for sentiment (MMSA), cross-entropy for classes, the mean over the
four emotions of a 2-way cross-entropy for IEMOCAP (MulT). Metrics are `fasca_jax.metrics`.
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

  name: ClassVar[str]
  # The metrics the field reports first: curves draw them, TensorBoard's HParams list them.
  key_metrics: ClassVar[tuple[str, ...]]

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
  """Sentiment regression (CMU-MOSI / MOSEI), MMSA's metrics."""

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
    return metrics.sentiment_metrics(output, target)

  def prediction_row(self, output, target):
    return {'prediction': float(output), 'label': float(target)}

  def describe(self, output):
    """{'score': s, 'sentiment': 'positive' if s >= 0 else 'negative'} (MMSA's Has0 split)."""
    score = float(output)
    return {'score': score, 'sentiment': 'positive' if score >= 0 else 'negative'}


class Classification(Task):
  """Single-label classification (MELD emotions): accuracy, weighted and macro F1."""

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
    return metrics.emotion_metrics(output, target)

  def describe(self, output):
    """{'prediction': name of the argmax, 'probabilities': {name: p}} (class_<i> unnamed)."""
    names = self.class_names or tuple(f'class_{i}' for i in range(self.num_classes))
    return {
      'prediction': names[int(np.argmax(output))],
      'probabilities': {n: float(p) for n, p in zip(names, output)},
    }


class Iemocap(Task):
  """IEMOCAP: four binary emotions (Neutral, Happy, Sad, Angry), MulT's metrics."""

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
    return metrics.iemocap_metrics(output, target)

  def describe(self, output):
    """{'prediction': the emotions present (P > 0.5), 'probabilities': {emotion: P(present)}}."""
    present = {e: float(p[1]) for e, p in zip(label_names.IEMOCAP_EMOTIONS, output)}
    return {'prediction': [e for e, p in present.items() if p > 0.5], 'probabilities': present}


TASKS = {t.name: t for t in (Regression, Classification, Iemocap)}


def get_task(name: str, num_classes: int = 1, class_names: tuple[str, ...] = ()) -> Task:
  """The Task called `name` ('regression', 'classification' or 'iemocap')."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}: expected one of {sorted(TASKS)}')
  return TASKS[name](num_classes=int(num_classes), class_names=tuple(class_names))


def from_config(config) -> Task:
  """The Task of a run config: `task`, `num_classes`, and the class names of the dataset's
  `target_key` where they are known and as many as the classes."""
  names = label_names.CLASS_NAMES.get((config.dataset.name, config.target_key), ())
  return get_task(
    config.task, config.num_classes, names if len(names) == config.num_classes else ()
  )
