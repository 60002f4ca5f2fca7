"""A trained run restored for inference: its config, its best parameters, a jitted forward pass,
and its examples by id. Used by predict.py (through `media_prediction`) and visualize.py."""

import jax
import ml_collections
import numpy as np

from fasca_jax import checkpoints
from fasca_jax import config_io
from fasca_jax import evaluation
from fasca_jax import input_pipeline
from fasca_jax import steps
from fasca_jax.models import fasca_net
from fasca_jax.models import text_encoder


class RestoredRun:
  """A training run restored from its workdir.

  Attributes:
    config: the run's config (workdir/config.json unless given; a given config that differs
      from it in a guarded field is refused, see `checkpoints.guard_config`).
    params: parameters of its best checkpoint.
    model: the FascaNet the config builds.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict | None = None):
    self.workdir = workdir
    if config is None:
      config = config_io.load(workdir)
    else:
      checkpoints.guard_config(
        config,
        workdir,
        remedy="omit --config to use the run's own config",
        free=checkpoints.EVAL_FREE_FIELDS,
      )
    self.config = config
    self.params = checkpoints.restore_best(self.config, workdir).state.params
    self.model = fasca_net.build(self.config)
    self._apply = jax.jit(lambda p, x, m: self.model.apply({'params': p}, x, m, train=False))

  def batch(self, features: dict[str, np.ndarray], example_id: str = '') -> dict:
    """One example in the input pipeline's batch layout (batch of 1), cropped and padded as
    training does.

    Args:
      features: modality -> (T_m, D_m) float32 features, for every modality of the config; for
        a run with a text encoder, 'text_ids' and 'text_segments' (T,) int instead of 'text'.
      example_id: its id.

    Returns:
      m: (1, L_m, D_m) cropped / zero-padded to config.max_len, m_mask: (1, L_m), m_len: (1,)
      (text_ids, text_segments: (1, L_t) with a text encoder).
    """
    max_len = {m: int(self.config.max_len[m]) for m in self.config.modalities}
    tokens = ('text',) if text_encoder.enabled(self.config) else ()
    return input_pipeline.example_batch(
      {'id': example_id.encode(), **features}, max_len=max_len, tokens=tokens
    )

  def find(self, split: str, example_id: str) -> dict:
    """The example `example_id` of `split` ('train', 'valid' or 'test') as a batch of 1.

    Raises:
      KeyError: the id is not in the split; the message names the split and a few valid ids.
    """
    if split not in evaluation.SPLITS:
      raise ValueError(f'unknown split {split!r}: expected one of {sorted(evaluation.SPLITS)}')
    dataset = input_pipeline.open_dataset(self.config)
    ids = input_pipeline.split_summary(dataset, evaluation.SPLITS[split]).ids
    where = np.flatnonzero(ids == example_id)
    if not where.size:
      raise KeyError(
        f'id {example_id!r} not found in split {split!r} of {dataset.name} '
        f'({len(ids)} examples); e.g. {", ".join(ids[:5])}'
      )
    index = int(where[0])
    record = dataset.source(evaluation.SPLITS[split])[index]
    return input_pipeline.example_batch(
      record, max_len=dataset.max_len, targets=dataset.targets, index=index, tokens=dataset.tokens
    )

  def apply(self, batch: dict):
    """Forward pass (no dropout) -> (outputs, intermediates) as NumPy, see FascaNet."""
    inputs, masks = steps.model_inputs(self.config, batch)
    return jax.device_get(self._apply(self.params, inputs, masks))
