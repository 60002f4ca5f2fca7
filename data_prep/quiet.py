"""`QuietBuild`: what our TFDS builders say while building, in this project's log.

TFDS prints a bold "Downloading and preparing dataset Unknown size (download: Unknown size,
generated: Unknown size, ...)" before a build and "Dataset ... downloaded and prepared" after it,
on stdout and outside the log. Our datasets are built from local files, so there is no download
and no size to announce: a builder that mixes in `QuietBuild` logs one line before and one after
instead. (TFDS's progress bars are switched off where builds start: `data_prep.build` and
`fasca_jax.input_pipeline.ensure_built`.)
"""

from absl import logging


class QuietBuild:
  """Mix into a `tfds.core.DatasetBuilder` subclass, before it in the bases."""

  def _log_download_bytes(self) -> None:  # overrides TFDS's print.
    logging.info('Building %s into %s.', self._quiet_name(), self.data_dir)

  def _log_download_done(self) -> None:  # overrides TFDS's print.
    counts = ', '.join(f'{s.num_examples} {n}' for n, s in self.info.splits.items())
    logging.info('Built %s: %s examples.', self._quiet_name(), counts)

  def _quiet_name(self) -> str:
    config = self.builder_config
    return self.name if config is None else f'{self.name}/{config.name}'
