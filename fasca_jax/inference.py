"""A trained run, ready for inference: its config, its best parameters, a jitted forward pass.

Used by predict.py (new media) and visualize.py (alignment plots of one example).
"""

import jax
import ml_collections
import numpy as np

from fasca_jax import config_io
from fasca_jax import input_pipeline
from fasca_jax import train_lib
from fasca_jax.models import fasca_net


def restore_params(config: ml_collections.ConfigDict, workdir: str):
  """Parameters of the best checkpoint of `workdir` (the latest one when there is no best)."""
  abstract = train_lib.Trainer(config, total_steps=1, steps_per_epoch=1).abstract_state()
  return train_lib.restore_best(abstract, workdir).params


class Run:
  """A restored training run.

  Attributes:
    config: the run's config (workdir/config.json unless given).
    params: parameters of its best checkpoint.
    model: the FascaNet the config builds.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict | None = None):
    self.workdir = workdir
    self.config = config if config is not None else config_io.load(workdir)
    self.params = restore_params(self.config, workdir)
    self.model = fasca_net.build(self.config)
    self._apply = jax.jit(lambda p, x, m: self.model.apply({'params': p}, x, m, train=False))

  def batch(self, features: dict[str, np.ndarray], example_id: str = '') -> dict:
    """One example in the input pipeline's batch layout (batch of 1).

    Args:
      features: modality -> (T_m, D_m) float32 features, for every modality of the config.
      example_id: its id.

    Returns:
      m: (1, L_m, D_m) cropped / zero-padded to config.max_len, m_mask: (1, L_m), m_len: (1,).
    """
    to_example = input_pipeline._ToExample(  # the pipeline's own crop / pad, so nothing drifts.
        max_len={m: int(self.config.max_len[m]) for m in self.config.modalities}, targets={})
    row = to_example.map({'id': example_id.encode(), **features})
    return {k: np.asarray(v)[None] for k, v in row.items()}

  def find(self, split: str, example_id: str) -> dict:
    """The example `example_id` of `split` ('train', 'valid' or 'test') as a batch of 1.

    Returns:
      The example in the pipeline's batch layout, batch of 1.
    Raises:
      KeyError: the id is not in the split; the message names the split and a few valid ids.
    """
    if split not in train_lib.SPLITS:
      raise ValueError(f'unknown split {split!r}: expected one of {sorted(train_lib.SPLITS)}')
    c, seen = self.config, []
    batches = input_pipeline.make_batches(
        c, train_lib.SPLITS[split], train=False, global_batch_size=c.eval_batch_size, seed=c.seed,
        process_index=0, process_count=1)
    for batch in batches:
      ids = [str(i) for i, v in zip(batch['id'], batch['valid']) if v]
      if example_id in ids:
        row = ids.index(example_id)
        return {k: v[row:row + 1] for k, v in batch.items()}
      seen.extend(ids)
    dataset = f'{c.dataset.name}/{c.dataset.config}'
    raise KeyError(f'id {example_id!r} not found in split {split!r} of {dataset} '
                   f'({len(seen)} examples); e.g. {", ".join(seen[:5])}')

  def apply(self, batch: dict):
    """Forward pass (no dropout) -> (outputs, intermediates) as NumPy, see FascaNet."""
    inputs = {m: batch[m] for m in self.config.modalities}
    masks = {m: batch[f'{m}_mask'] for m in self.config.modalities}
    return jax.device_get(self._apply(self.params, inputs, masks))
