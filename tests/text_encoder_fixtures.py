"""Small Hugging Face checkpoints made on the spot (random weights, saved by transformers' own
`save_pretrained`) and a tiny text-encoder run config, for the text-encoder tests."""

import os
import pathlib
import shutil

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import transformers

from configs import default
from data_prep.features import text as text_lib

TOKENIZER_FILES = (
  'vocab.txt',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
)


def tiny_bert_dir(root: pathlib.Path, *, layers: int = 3, with_tokenizer: bool = True) -> str:
  """A random 3-layer, width-32 BERT with MiniLM's vocabulary (30522 ids) and, by default, its
  tokenizer files, saved as flax_model.msgpack + config.json in `root`."""
  config = transformers.BertConfig(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=layers,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
  )
  transformers.FlaxBertModel(config, seed=0).save_pretrained(root)
  if with_tokenizer:
    for name in TOKENIZER_FILES:
      shutil.copy(text_lib.default_model_dir() / name, root / name)
  return str(root)


def tiny_config(text_encoder: str, *, max_len: int = 16, width: int = 384):
  """A text-only 3-class config with a tiny fusion model over `text_encoder`, dropout off."""
  config = default.get_config()
  config.modalities = ('text',)
  config.dims.text, config.max_len.text = width, max_len
  config.model.update(d_model=16, num_heads=2, head_hidden=16, dropout=0.0)
  config.model.text_encoder = text_encoder
  config.task, config.num_classes, config.target_key = 'classification', 3, 'label'
  config.optimizer.update(lr=1e-3, text_encoder_lr=1e-4, warmup_epochs=0.0)
  config.batch_size = 4
  return config
