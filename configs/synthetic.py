"""FASCA-Net on the built-in synthetic dataset (built automatically on first use).

  python train.py --config=configs/synthetic.py --workdir=workdirs/synthetic
  python eval.py --config=configs/synthetic.py --workdir=workdirs/synthetic --split=test

`configs/synthetic.py:tiny` shrinks data, model and epochs so the whole path runs in seconds
(the tests use it).
"""

from configs import common
from configs import default


def get_config(arg=None):
  """arg: None for the demo run, 'tiny' for the seconds-long smoke configuration."""
  arg = common.parse_arg(arg, allowed=(None, 'tiny'), default=None, config_file='synthetic')
  config = default.get_config()
  config.dataset.name = 'synthetic_affect'
  # `short` (10-20 words, 20-60 frames, 8000 training examples) keeps the demo within minutes on
  # two CPU cores; `default` (16-40 words, 32-120 frames, 2000) is the harder variant.
  config.dataset.config = 'short'
  config.max_len.text = 20
  config.max_len.audio = 60
  config.max_len.vision = 60
  config.model.d_model = 64
  config.model.num_heads = 4
  config.model.ffn_mult = 2
  config.model.d_align = 32
  config.model.bfa_heads = 2
  config.model.head_hidden = 64
  config.model.dropout = 0.2
  config.optimizer.lr = 1e-3
  config.optimizer.weight_decay = 1e-2  # with dropout 0.2: without them the model memorises.
  config.num_epochs = 8  # 2000 steps
  config.batch_size = 32
  config.log_every_steps = 50
  if arg == 'tiny':
    config.dataset.config = 'tiny'
    config.max_len.text = 12
    config.max_len.audio = 30
    config.max_len.vision = 30
    config.model.d_model = 16
    config.model.num_heads = 2
    config.model.d_align = 8
    config.model.bfa_heads = 2
    config.model.num_bfa = 1
    config.model.head_hidden = 16
    config.num_epochs = 2
    config.batch_size = 16
    config.eval_batch_size = 16
    config.log_every_steps = 2
  return config
