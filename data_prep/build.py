r"""Builds one dataset config as array_record and prints what was built and repaired.

  python -m data_prep.build --dataset=cmu_mosei --config=mmsa_unaligned \
      --manual_dir=/data/MMSA/MOSEI/Processed --data_dir=~/tensorflow_datasets

`--dataset` names both the builder and its module, `data_prep.<dataset>` (cmu_mosi, cmu_mosei,
iemocap, meld, synthetic_affect). The summary gives the example count of each split and every
repair or drop of the builder's repair log (`repairs.json` in the dataset directory), per split,
field and kind. An already built dataset is reused (and summarised) unless --overwrite.
"""
import importlib
import json
import os

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from data_prep import sources

_DATASET = flags.DEFINE_string(
    'dataset', None, 'Builder name, also its module data_prep.<dataset>.', required=True)
_CONFIG = flags.DEFINE_string('config', None, 'Builder config; default: the builder\'s default.')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with the manually downloaded source files (see the builder\'s '
    'MANUAL_DOWNLOAD_INSTRUCTIONS).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where datasets are written; default: TFDS\'s (~/tensorflow_datasets).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Rebuild even if the dataset exists.')


def builder_class(dataset: str) -> type[tfds.core.DatasetBuilder]:
  """The builder named `dataset`, defined in module `data_prep.<dataset>`."""
  module = importlib.import_module(f'data_prep.{dataset}')
  for value in vars(module).values():
    if (isinstance(value, type) and issubclass(value, tfds.core.DatasetBuilder)
        and value.__module__ == module.__name__ and value.name == dataset):
      return value
  raise ValueError(f'data_prep.{dataset} defines no TFDS builder named {dataset!r}')


def build(dataset: str, config: str | None = None, *, manual_dir: str | None = None,
          data_dir: str | None = None, overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds (or reuses) `dataset`/`config` as array_record; returns the prepared builder."""
  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)
  builder = builder_class(dataset)(config=config, data_dir=data_dir, file_format='array_record')
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  tfds.display_progress_bar(True)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode),
      file_format='array_record')
  return builder


def repairs_text(path) -> str:
  """A repairs file as text: a `RepairLog` table, or other builders' JSON pretty-printed."""
  with open(path) as f:
    data = json.load(f)
  if isinstance(data, list):  # Rows written by sources.RepairLog.
    return sources.RepairLog.from_json(data).summary()
  return json.dumps(data, indent=2, sort_keys=True)


def summary(builder: tfds.core.DatasetBuilder) -> str:
  """Example count per split and the builder's repair log, as text."""
  name = builder.name if builder.builder_config is None else (
      f'{builder.name}/{builder.builder_config.name}')
  lines = [f'{name} {builder.version} at {builder.data_dir}']
  lines += [f'  {split}: {info.num_examples} examples'
            for split, info in builder.info.splits.items()]
  repairs_path = os.path.join(builder.data_dir, sources.REPAIRS_FILE)
  if os.path.exists(repairs_path):
    lines += ['Repairs and drops:', repairs_text(repairs_path)]
  else:
    lines.append(f'No repair log ({sources.REPAIRS_FILE}) recorded by this builder.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  builder = build(_DATASET.value, _CONFIG.value, manual_dir=_MANUAL_DIR.value,
                  data_dir=_DATA_DIR.value, overwrite=_OVERWRITE.value)
  print(summary(builder))


if __name__ == '__main__':
  app.run(main)
