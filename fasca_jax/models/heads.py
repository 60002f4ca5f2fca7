"""The task head: LayerNorm -> Dense -> GELU -> dropout -> Dense, shaped by the Task."""

import flax.linen as nn
from flax.typing import Dtype
import jax.numpy as jnp

from fasca_jax import tasks


class TaskHead(nn.Module):
  """LayerNorm -> Dense(hidden) -> GELU -> dropout -> Dense(task.output_units).

  x: (B, D) -> the task's head output (`fasca_jax.tasks`), float32.
  """

  task: tasks.Task
  hidden: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    h = nn.LayerNorm(dtype=self.dtype, name='ln')(x)
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name='hidden')(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    y = nn.Dense(self.task.output_units, dtype=self.dtype, name='out')(h)
    return self.task.shape_output(y)
