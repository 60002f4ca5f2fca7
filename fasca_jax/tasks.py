"""Per-task losses and what the host reads back: L1 (MMSA), cross-entropy, IEMOCAP 4x2-way CE."""

import jax
import jax.numpy as jnp
import optax


def per_example_loss(task: str, y, target):
  """Loss per example.

  Args:
    task: 'regression' | 'classification' | 'iemocap'.
    y: (B,) predictions, (B, C) logits, or (B, 4, 2) logits.
    target: (B,) float sentiment, (B,) int class, or (B, 4) int binary labels.

  Returns:
    (B,) float32 losses.
  """
  if task == 'regression':
    return jnp.abs(y - target.astype(jnp.float32))
  if task == 'classification':
    return optax.softmax_cross_entropy_with_integer_labels(y, target.astype(jnp.int32))
  if task == 'iemocap':
    return optax.softmax_cross_entropy_with_integer_labels(y, target.astype(jnp.int32)).mean(-1)
  raise ValueError(f'unknown task {task!r}')


def host_output(task: str, y):
  """What eval reads back: raw sentiment, class probabilities (B, C) or (B, 4, 2)."""
  return y if task == 'regression' else jax.nn.softmax(y, axis=-1)


def masked_mean(values, weights):
  """Mean of (B,) values over examples with weight 1 (padding examples have weight 0)."""
  weights = weights.astype(jnp.float32)
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)
