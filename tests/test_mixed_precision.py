"""`config.dtype='bfloat16'`: bfloat16 compute, float32 parameters, optimizer state and loss."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from fasca_jax import input_pipeline
from fasca_jax import steps

STEPS = 32  # 8 passes over the same 4 batches.


@pytest.fixture(scope='module')
def bf16_config(tmp_path_factory):
  config = synthetic.get_config('tiny')
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.dtype = 'bfloat16'
  config.model.dropout = 0.0
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.lr = 3e-3
  return config


def _dot_dtypes(jitted, params, batch):
  """Operand dtypes of every matmul / convolution in the jaxpr of the loss, and the loss dtype."""
  jaxpr = jax.make_jaxpr(lambda p: jitted.loss(p, batch))(params)
  found = []

  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name in ('dot_general', 'conv_general_dilated'):
        found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else (param,):
          if hasattr(sub, 'eqns'):  # Jaxpr
            walk(sub)
          elif hasattr(getattr(sub, 'jaxpr', None), 'eqns'):  # ClosedJaxpr
            walk(sub.jaxpr)

  walk(jaxpr.jaxpr)
  return found, jaxpr.out_avals[0].dtype


def test_bfloat16_computes_in_bf16_and_trains(bf16_config):
  config = bf16_config
  jitted = steps.JittedSteps(
    config, steps.make_optimizer(config, total_steps=STEPS, steps_per_epoch=STEPS)
  )
  state = jitted.init(config.seed)
  batches = [
    input_pipeline.to_global(b, jitted.data_sharding)
    for b in itertools.islice(
      input_pipeline.make_batches(
        input_pipeline.open_dataset(config),
        'train',
        train=True,
        global_batch_size=config.batch_size,
        seed=0,
      ),
      4,
    )
  ]

  dots, loss_dtype = _dot_dtypes(jitted, state.params, batches[0])
  assert dots and all(d == ('bfloat16', 'bfloat16') for d in dots), dots
  assert loss_dtype == jnp.float32

  losses = []  # dropout is off: the step's loss is the loss of its batch before the update.
  for step in range(STEPS):
    state, metrics = jitted.train(state, batches[step % len(batches)])
    assert metrics['loss'].dtype == jnp.float32
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses))
  first, last = np.mean(losses[: len(batches)]), np.mean(losses[-len(batches) :])  # same batches.
  assert last < 0.8 * first, losses
  for leaf in jax.tree.leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
