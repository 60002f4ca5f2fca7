"""The datasets this project builds: each name is a TFDS builder defined in module
`data_prep.<name>`; `check` refuses an unknown dataset or builder config with the valid ones.

Used by `python -m data_prep.build` and by the input pipeline (`config.dataset.name` /
`config.dataset.config`), so a typo fails in one line instead of a `ModuleNotFoundError` or TFDS's
"closely match" list.
"""

import importlib

import tensorflow_datasets as tfds

from fasca_jax import errors

DATASETS = ('cmu_mosi', 'cmu_mosei', 'iemocap', 'meld', 'synthetic_affect')


def builder_class(dataset: str) -> type[tfds.core.DatasetBuilder]:
  """The builder named `dataset`, defined in module `data_prep.<dataset>`."""
  module = importlib.import_module(f'data_prep.{dataset}')
  for value in vars(module).values():
    if (
      isinstance(value, type)
      and issubclass(value, tfds.core.DatasetBuilder)
      and value.__module__ == module.__name__
      and value.name == dataset
    ):
      return value
  raise ValueError(f'data_prep.{dataset} defines no TFDS builder named {dataset!r}')


def check(dataset: str, config: str | None, *, flags: tuple[str, str]) -> None:
  """Raises ConfigError naming the valid choices when no TFDS builder `dataset` is defined in
  module `data_prep.<dataset>` (importing it registers the builder), or when `config` (None or
  '': the builder's default) is not one of its builder configs.

  `flags` names the two settings in the user's words, e.g. ('config.dataset.name',
  'config.dataset.config') or ('--dataset', '--config').
  """
  unknown = errors.ConfigError(
    f'{flags[0]}={dataset!r} is not a dataset of this project; the datasets are '
    f'{", ".join(DATASETS)}.'
  )
  try:
    importlib.import_module(f'data_prep.{dataset}')
    cls = tfds.builder_cls(dataset)
  except ModuleNotFoundError as e:
    if e.name != f'data_prep.{dataset}':  # the module exists; something it imports does not.
      raise
    raise unknown from None
  except tfds.core.registered.DatasetNotFoundError:
    raise unknown from None
  names = [c.name for c in cls.BUILDER_CONFIGS or ()]
  if config and config not in names:
    raise errors.ConfigError(
      f'{flags[1]}={config!r} is not a builder config of {dataset}; its configs are '
      f'{", ".join(names) or "none"}.'
    )
