"""Which data a run's numbers come from, as its `results.json` records it.

`results.json` holds, next to split -> metric -> value, one entry `PROVENANCE_KEY` ('dataset'):

  {"name": "cmu_mosei/csd", "version": "1.1.0",
   "sources": {"CMU_MOSEI_COVAREP.csd": {"sha256": "...", "bytes": 123}, ...}}

The digests are those the builder recorded when it read its source files (`data_prep.sources.
RepairLog.add_source`, stored in the dataset's metadata); `sources` is empty for a generated
dataset (synthetic_affect) and for a dataset built before digests were recorded (rebuild it with
`python -m data_prep.build ... --overwrite` to record them).
"""

from data_prep import sources

PROVENANCE_KEY = 'dataset'


def of_builder(builder) -> dict:
  """{'name': 'name/config', 'version', 'sources': {file: {'sha256', 'bytes'}}} of a prepared
  TFDS builder."""
  name = builder.name
  if builder.builder_config is not None:
    name = f'{name}/{builder.builder_config.name}'
  metadata = builder.info.metadata or {}
  return {
    'name': name,
    'version': str(builder.version),
    'sources': {k: dict(v) for k, v in metadata.get(sources.SOURCES_METADATA, {}).items()},
  }
