"""Builder config, widths and lengths for each source format of CMU-MOSI / CMU-MOSEI / IEMOCAP.

Shared by configs/mosi.py, configs/mosei.py and configs/iemocap.py; the widths are the ones the
builders validate (data_prep/cmu_mosi.py, cmu_mosei.py, iemocap.py).
"""

from configs import common

# config arg -> (builder config, {dataset: dims}, {dataset: max_len}).
SOURCES = {
  'aligned': (
    'mmsa_aligned',
    {'mosi': (768, 5, 20), 'mosei': (768, 74, 35)},
    {'mosi': (50, 50, 50), 'mosei': (50, 50, 50)},
  ),
  'unaligned': (
    'mmsa_unaligned',
    {'mosi': (768, 5, 20), 'mosei': (768, 74, 35)},
    {'mosi': (50, 375, 500), 'mosei': (50, 500, 500)},
  ),
  'mult_aligned': (
    'mult_aligned',
    {'mosi': (300, 74, 47), 'mosei': (300, 74, 35), 'iemocap': (300, 74, 35)},
    {'mosi': (50, 50, 50), 'mosei': (50, 50, 50), 'iemocap': (20, 20, 20)},
  ),
  'mult_unaligned': (
    'mult_unaligned',
    {'mosi': (300, 74, 47), 'mosei': (300, 74, 35), 'iemocap': (300, 74, 35)},
    {'mosi': (50, 375, 500), 'mosei': (50, 500, 500), 'iemocap': (20, 400, 500)},
  ),
  'csd': (
    'csd',
    {'mosi': (300, 74, 35), 'mosei': (300, 74, 35)},
    {'mosi': (50, 50, 50), 'mosei': (50, 50, 50)},
  ),
}


def args(dataset: str) -> list[str]:
  """The config args (source formats) that `dataset` ('mosi', 'mosei', 'iemocap') has."""
  return [a for a, (_, dims, _) in SOURCES.items() if dataset in dims]


def apply(config, dataset: str, builder: str, arg: str | None, default_arg: str):
  """Points `config` at `builder` with the widths and lengths of the chosen source format."""
  arg = common.parse_arg(
    arg,
    allowed=args(dataset),
    default=default_arg,
    config_file=dataset,
  )
  builder_config, dims, lengths = SOURCES[arg]
  config.dataset.name, config.dataset.config = builder, builder_config
  for m, d, length in zip(('text', 'audio', 'vision'), dims[dataset], lengths[dataset]):
    config.dims[m], config.max_len[m] = d, length
  return config
