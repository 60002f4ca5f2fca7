"""Shared TFDS builder for the released-feature datasets (CMU-MOSI, CMU-MOSEI, IEMOCAP).

A `SourceConfig` names one source format ('mmsa', 'mult' or 'csd', see the reader modules of the
same names), the files it reads from the manual dir and the feature width of each modality. An
`AffectBuilder` reads those files with the matching reader, which checks every array against the
widths, writes array_record, and records the build's `RepairLog` as `repairs.json` in the dataset
directory `data_dir/<name>/<config>/<version>/` (`data_prep.build` prints it).

Provenance: the SHA-256 and size of every source file read (the pickle, or the five `.csd`
files and the folds file) are in that log and in the dataset's metadata
(`builder.info.metadata['sources']`, `metadata.json` beside the data), from which a run's
`results.json` copies them (`fasca_jax.provenance`).
"""

import dataclasses
import os
import sys
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from data_prep import csd, mmsa, mult, quiet, sources
from fasca_jax import label_names


def folds_help(sdk_module: str, sizes: str) -> str:
  """What folds.json holds, for the SDK dataset module `sdk_module` (e.g. 'cmu_mosi')."""
  return (
    'folds.json (optional) holds folds as video id lists, {"train": [...], "valid": [...], '
    '"test": [...]}; without it the SDK\'s standard folds (mmsdk.mmdatasdk.'
    f'{sdk_module}.standard_folds: {sizes} videos) shipped in data_prep/standard_folds/'
    f'{sdk_module}.json are used.'
  )


RELEASE_NOTES_1_1 = {
  '1.0.0': 'Initial release.',
  '1.1.0': "Source file digests in the metadata and the build log; csd: the SDK's align + "
  'average rules (short words skipped, boundary words kept, non-finite means zeroed), '
  'shipped standard folds.',
}


# The mmsa configs moved on alone (the other configs' data did not change).
MMSA_VERSION = '1.2.0'
MMSA_RELEASE_NOTES = {
  **RELEASE_NOTES_1_1,
  '1.2.0': "text_ids / text_segments from MMSA's text_bert (token and segment ids), for runs "
  'that fine-tune their text encoder.',
}


@dataclasses.dataclass(eq=False)
class SourceConfig(tfds.core.BuilderConfig):
  """One source format and its files.

  Attributes:
    source: 'mmsa', 'mult' or 'csd'.
    aligned: the pickle is word-aligned (equal steps per modality; 'mmsa' and 'mult').
    pickle_name: pickle file in the manual dir ('mmsa' and 'mult').
    csd_files: `.csd` and folds file names in the manual dir ('csd').
    folds_help: what the optional `folds.json` holds ('csd').
    dims: {'text': D_t, 'audio': D_a, 'vision': D_v} feature widths.
    task: 'regression' (sentiment) or 'iemocap' (four binary emotions).
    raw_text: the source has transcripts.
    emotions: the labels also carry MOSEI's six emotion intensities ('csd').
  """

  source: str = 'mmsa'
  aligned: bool = True
  pickle_name: str = ''
  csd_files: csd.CsdFiles | None = None
  folds_help: str = ''
  dims: Mapping[str, int] = dataclasses.field(default_factory=dict)
  task: str = 'regression'
  raw_text: bool = True
  emotions: bool = False

  def manual_files(self) -> list[str]:
    """Files this config needs in the manual dir (a csd `folds.json` is optional)."""
    if self.source == 'csd':
      return list(self.csd_files.sequences().values())
    return [self.pickle_name]

  def instructions(self) -> str:
    """Which files go where, for this config."""
    lines = [f'{self.name}: {self.description}', '  Put directly in the manual dir:']
    lines += [f'    {name}' for name in self.manual_files()]
    if self.source == 'csd':
      lines.append(f'  {self.folds_help}')
    return '\n'.join(lines)


def sentiment_configs(
  *,
  title: str,
  mmsa_dir: str,
  mmsa_dims: Mapping[str, int],
  mult_prefix: str,
  mult_dims: Mapping[str, int],
  csd_files: csd.CsdFiles,
  csd_dims: Mapping[str, int],
  folds_help: str,
  emotions: bool,
) -> list[SourceConfig]:
  """The five configs of a sentiment dataset: mmsa/mult aligned/unaligned, and csd.

  Args:
    title: dataset name in descriptions, e.g. 'CMU-MOSI'.
    mmsa_dir: folder of the MMSA release holding the pickles, e.g. 'MOSI/Processed'.
    mmsa_dims, mult_dims, csd_dims: feature widths of each source.
    mult_prefix: MulT pickle prefix, e.g. 'mosi' for mosi_data.pkl.
    csd_files: file names of the csd config.
    folds_help: what folds.json must hold.
    emotions: the csd labels carry six emotion intensities (MOSEI).
  """

  def mmsa_config(name, aligned, file):
    return SourceConfig(
      name=name,
      version=MMSA_VERSION,
      release_notes=MMSA_RELEASE_NOTES,
      source='mmsa',
      aligned=aligned,
      pickle_name=file,
      dims=mmsa_dims,
      description=f'{title}, MMSA BERT features (MMSA release {mmsa_dir}/{file}).',
    )

  def mult_config(name, aligned, file):
    return SourceConfig(
      name=name,
      source='mult',
      aligned=aligned,
      pickle_name=file,
      dims=mult_dims,
      raw_text=False,
      description=f'{title}, MulT GloVe features (MulT release {file}).',
    )

  return [
    mmsa_config('mmsa_aligned', True, 'aligned_50.pkl'),
    mmsa_config('mmsa_unaligned', False, 'unaligned_50.pkl'),
    mult_config('mult_aligned', True, f'{mult_prefix}_data.pkl'),
    mult_config('mult_unaligned', False, f'{mult_prefix}_data_noalign.pkl'),
    SourceConfig(
      name='csd',
      source='csd',
      csd_files=csd_files,
      folds_help=folds_help,
      dims=csd_dims,
      emotions=emotions,
      description=f'{title}, CMU-MultimodalSDK computational sequences, averaged per word.',
    ),
  ]


def manual_instructions(configs: list[SourceConfig]) -> str:
  """MANUAL_DOWNLOAD_INSTRUCTIONS for a builder: the files of every config."""
  return '\n'.join(
    [
      'Pass the folder holding the files below as the manual dir '
      '(`--manual_dir`, or `tfds.download.DownloadConfig(manual_dir=...)`).'
    ]
    + [config.instructions() for config in configs]
  )


def features(config: SourceConfig) -> tfds.features.FeaturesDict:
  """The example contract's features for `config` (widths from `config.dims`)."""
  spec = {'id': tfds.features.Text()}
  for m in sources.MODALITIES:
    spec[m] = tfds.features.Tensor(shape=(None, config.dims[m]), dtype=np.float32)
  if config.task == 'iemocap':
    spec['label'] = tfds.features.Tensor(
      shape=(4,), dtype=np.int32, doc='Neutral, Happy, Sad, Angry: 1 present, 0 absent.'
    )
  else:
    spec['regression'] = tfds.features.Scalar(np.float32, doc='Sentiment in [-3, 3].')
  if config.raw_text:
    spec['raw_text'] = tfds.features.Text()
  if config.source == 'mmsa':  # MMSA's text_bert rows: token ids and segment ids.
    spec['text_ids'] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    spec['text_segments'] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
  if config.emotions:
    spec['emotions'] = tfds.features.Tensor(
      shape=(len(label_names.MOSEI_EMOTIONS),),
      dtype=np.float32,
      doc=f'Intensities in [0, 3] of {", ".join(label_names.MOSEI_EMOTIONS)}.',
    )
  return tfds.features.FeaturesDict(spec)


def read_source(
  config: SourceConfig, manual_dir, log: sources.RepairLog
) -> dict[str, Iterator[dict]]:
  """{TFDS split: contract examples} read from `manual_dir` by the config's reader."""
  if config.source == 'csd':
    return csd.split_examples(
      manual_dir,
      config.csd_files,
      dims=config.dims,
      label_width=7 if config.emotions else 1,
      log=log,
    )
  path = os.path.join(manual_dir, config.pickle_name)
  if config.source == 'mmsa':
    return mmsa.split_examples(path, dims=config.dims, aligned=config.aligned, log=log)
  return mult.split_examples(
    path, dims=config.dims, aligned=config.aligned, task=config.task, log=log
  )


class AffectBuilder(quiet.QuietBuild, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds one `SourceConfig` from the manual dir; subclasses set BUILDER_CONFIGS."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = RELEASE_NOTES_1_1

  def __init__(self, *, file_format='array_record', **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=sys.modules[type(self).__module__].__doc__,
      features=features(self.builder_config),
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )  # Examples keep the source's order.

  def _download_and_prepare(self, dl_manager, download_config=None):
    """Builds every split, then writes the build log next to the data and the source digests
    into the dataset's metadata."""
    self._repair_log = sources.RepairLog()
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    self._repair_log.write(os.path.join(self.data_dir, sources.REPAIRS_FILE))
    self.info.metadata[sources.SOURCES_METADATA] = dict(self._repair_log.sources)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    manual_dir = dl_manager.manual_dir
    missing = [name for name in config.manual_files() if not (manual_dir / name).exists()]
    if missing:
      raise FileNotFoundError(
        f'{self.name}/{config.name}: {missing} not found in manual dir '
        f'{manual_dir}.\n{config.instructions()}'
      )
    for name in config.manual_files():
      self._repair_log.add_source(manual_dir / name)
    splits = read_source(config, os.fspath(manual_dir), self._repair_log)
    return {split: self._generate_examples(split, examples) for split, examples in splits.items()}

  def _generate_examples(self, split: str, examples):
    """Keys are positions, so the built order is the source order.

    Raises:
      SourceError: the split has no example left (e.g. every label was non-finite), naming
        what was dropped (TFDS would fail with a bare AssertionError).
    """
    count = 0
    for count, example in enumerate(examples, 1):
      yield count - 1, example
    if not count:
      source_split = {v: k for k, v in sources.SPLIT_NAMES.items()}.get(split, split)
      name = f'{self.name}/{self.builder_config.name}'
      raise sources.empty_split_error(name, source_split, self._repair_log)
