"""Task heads: regression (sentiment), multi-class (emotion), IEMOCAP 4 x binary."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
IEMOCAP_EMOTIONS = 4


def output_size(task: str, num_classes: int) -> int:
  """Number of output units the task needs."""
  if task == 'regression':
    return 1
  if task == 'classification':
    return num_classes
  if task == 'iemocap':
    return IEMOCAP_EMOTIONS * 2
  raise ValueError(f"unknown task {task!r}: expected 'regression', 'classification' or 'iemocap'")


def shape_output(task: str, y):
  """y: (B, units) -> (B,) regression, (B, C) logits, or (B, 4, 2) IEMOCAP logits (float32)."""
  y = y.astype(jnp.float32)
  if task == 'regression':
    return y[:, 0]
  if task == 'iemocap':
    return y.reshape(y.shape[0], IEMOCAP_EMOTIONS, 2)
  return y


class TaskHead(nn.Module):
  """LayerNorm -> Dense(hidden) -> GELU -> dropout -> Dense(task units).  x: (B, D)."""
  task: str
  num_classes: int
  hidden: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    h = nn.LayerNorm(dtype=self.dtype, name='ln')(x)
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name='hidden')(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    y = nn.Dense(output_size(self.task, self.num_classes), dtype=self.dtype, name='out')(h)
    return shape_output(self.task, y)
