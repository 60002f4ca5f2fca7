"""The whole FASCA-Net: CLS tokens, fusion layers, FGFA pairs, task head."""

from typing import Any, Mapping, Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax.numpy as jnp

from fasca_jax import modalities as modalities_lib
from fasca_jax import tasks
from fasca_jax.models import alignment
from fasca_jax.models import fusion
from fasca_jax.models import heads
from fasca_jax.models import text_encoder as text_encoder_lib


class FascaNet(nn.Module):
  """FASCA-Net over any subset of {text, audio, vision}.

  Attributes mirror `config.model` (see configs/default.py), so `build` passes it as keywords;
  `modalities` fixes which streams are built, `align_pairs` which partners are aligned to text
  (only those present), `task` and `num_classes` the head (`fasca_jax.tasks`).
  `text_encoder` is 'features' (the text stream is the dataset's features) or a BERT-family
  checkpoint (`fasca_jax.models.text_encoder`) run on token ids inside the model.
  """

  modalities: Sequence[str]
  task: str
  num_classes: int = 1
  d_model: int = 256
  num_heads: int = 8
  num_fusion_layers: int = 1
  ffn_mult: int = 4
  dropout: float = 0.1
  attn_dropout: float = 0.0
  attention: str = 'auto'
  use_fusion: bool = True
  d_align: int = 64
  align_pairs: Sequence[str] = ('audio', 'vision')
  dilations: Mapping[str, int] = None
  far_kernel: Sequence[int] = (3, 3)
  num_bfa: int = 2
  bfa_heads: int = 4
  deform_method: str = 'auto'
  head_hidden: int = 256
  aux_heads: bool = False
  text_encoder: str = text_encoder_lib.FEATURES
  dtype: Dtype = jnp.float32

  def pairs(self) -> tuple[str, ...]:
    """Partners aligned to text in this model (text and partner both present)."""
    return modalities_lib.aligned_pairs(self.modalities, self.align_pairs)

  @nn.compact
  def __call__(self, inputs: Mapping[str, Any], masks: Mapping[str, Any], *, train: bool):
    """Runs the model.

    Args:
      inputs: modality -> (B, T_m, D_m) float features (every name in `modalities`). With a
        text encoder, inputs['text'] is (B, T_t) int token ids instead and the optional
        inputs['text_segments'] (B, T_t) int segment ids (0 when absent).
      masks: modality -> (B, T_m) bool, True on real steps (for tokens: the attention mask).
      train: enables dropout.

    Returns:
      outputs: {'main': task output, 'aux_<m>': ... when aux_heads}; task output is (B,) for
        regression, (B, C) logits for classification, (B, 4, 2) logits for IEMOCAP.
      intermediates: {'cross_attention': m -> (B, N, T_m+1, .) of the last fusion layer (absent
        without fusion), '<pair>_far': offsets/mask of that pair's FAR}.
    """
    missing = [m for m in self.modalities if m not in inputs]
    if missing:
      raise ValueError(f'model expects modalities {tuple(self.modalities)}; missing {missing}')
    xs, ms = {}, {}
    for m in self.modalities:
      x = inputs[m]
      if m == modalities_lib.REFERENCE and self.text_encoder != text_encoder_lib.FEATURES:
        x, _ = text_encoder_lib.TextEncoder(
          config=text_encoder_lib.load_config(self.text_encoder),
          dtype=self.dtype,
          name=text_encoder_lib.NAME,
        )(x, masks[m], inputs.get(f'{m}_segments'), train=train)  # (B, T_t, H)
      x = x.astype(self.dtype)
      cls = self.param(f'cls_{m}', nn.initializers.normal(0.02), (1, 1, x.shape[-1]))
      xs[m] = jnp.concatenate(
        [jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])).astype(self.dtype), x], axis=1
      )  # (B, T_m + 1, D_m)
      ms[m] = jnp.concatenate([jnp.ones_like(masks[m][:, :1]), masks[m]], axis=1)
    intermediates = {}
    if self.use_fusion:
      for i in range(self.num_fusion_layers):  # the last layer's weights are kept.
        xs, intermediates['cross_attention'] = fusion.TriModalFusion(
          d_model=self.d_model,
          num_heads=self.num_heads,
          ffn_mult=self.ffn_mult,
          dropout=self.dropout,
          attn_dropout=self.attn_dropout,
          dtype=self.dtype,
          attention=self.attention,
          name=f'fusion_{i}',
        )(xs, ms, train=train)
    dilations = dict(self.dilations or {})
    pooled = []
    for p in self.pairs():
      ref = modalities_lib.REFERENCE
      out, far = alignment.FGFA(
        d_align=self.d_align,
        dilation=dilations.get(p, 1),
        kernel_size=tuple(self.far_kernel),
        num_bfa=self.num_bfa,
        bfa_heads=self.bfa_heads,
        deform_method=self.deform_method,
        dtype=self.dtype,
        name=f'fgfa_{p}',
      )(xs[ref], ms[ref], xs[p], ms[p])
      pooled.append(out)
      intermediates[f'{p}_far'] = far
    cls_vectors = [xs[m][:, 0] for m in self.modalities]
    task = tasks.get_task(self.task, self.num_classes)
    head = lambda name: heads.TaskHead(
      task=task, hidden=self.head_hidden, dropout=self.dropout, dtype=self.dtype, name=name
    )
    outputs = {'main': head('head')(jnp.concatenate(pooled + cls_vectors, -1), train=train)}
    if self.aux_heads:
      for m in self.modalities:
        outputs[f'aux_{m}'] = head(f'aux_{m}')(xs[m][:, 0], train=train)
    return outputs, intermediates


def build(config) -> FascaNet:
  """The model of a run config: `FascaNet(**config.model, ...)` with the config's modalities,
  task and computation dtype.

  `config` is an `ml_collections.ConfigDict` (configs/default.py); this module does not import
  ml_collections, so the model also loads where only JAX and Flax are installed. A field absent
  from an older run's saved config (e.g. `model.attention`) takes the attribute's default.
  """
  return FascaNet(
    **config.model.to_dict(),
    modalities=tuple(config.modalities),
    task=config.task,
    num_classes=config.num_classes,
    dtype=jnp.dtype(config.dtype),
  )
