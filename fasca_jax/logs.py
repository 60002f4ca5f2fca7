"""What a run logs: this project's progress and metrics and every real warning, without the
libraries' INFO chatter (Orbax, TFDS, grain, JAX's "Unable to initialize backend 'tpu'",
transformers) or their warnings that only describe a normal first build.

`setup_logging()` is called by every entry point (`cli.run`, `python -m data_prep.build`).
"""

import logging as logging_std
import re

from absl import logging

# Libraries whose INFO records are dropped: a record comes from one of them when its file lies in
# that package of an installed environment (absl logging names every record 'absl', so the file
# is what tells them apart).
QUIET_LIBRARIES = ('orbax', 'tensorflow_datasets', 'grain', 'jax', 'jaxlib', 'transformers')
_LIBRARY_FILE = re.compile(
  r'[/\\](?:site|dist)-packages[/\\](' + '|'.join(QUIET_LIBRARIES) + r')[/\\]'
)
# Warnings of those libraries that describe a normal event, not a problem: (library, message).
EXPECTED_WARNINGS = (
  # TFDS, on the first (automatic) build of a dataset: its folder has no metadata yet.
  ('tensorflow_datasets', re.compile(r'has no dataset_info\.json')),
)


class LibraryInfoFilter(logging_std.Filter):
  """Drops INFO records of `QUIET_LIBRARIES` and their `EXPECTED_WARNINGS`; keeps the rest."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    match = _LIBRARY_FILE.search(record.pathname or '')
    if match is None:
      return True
    if record.levelno < logging_std.WARNING:
      return False
    message = record.getMessage()
    return not any(
      match.group(1) == library and pattern.search(message)
      for library, pattern in EXPECTED_WARNINGS
    )


def setup_logging():
  """INFO for this project's progress lines, without the libraries' per-call INFO logs."""
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(LibraryInfoFilter())
