"""What every entry point (train.py, eval.py, ablate.py, predict.py, visualize.py) shares: the
distributed flags, the start-up (log verbosity, `jax.distributed`) and readable command-line
errors. An entry point defines its own flags and `main(argv)` and ends with `cli.run(main)`."""

import logging as logging_std
import re
import sys

from absl import app
from absl import flags
from absl import logging

from fasca_jax import distributed

_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  None,
  'host:port of process 0 for multi-process runs (or $JAX_COORDINATOR_ADDRESS).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Process count (or $JAX_NUM_PROCESSES).'
)
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (or $JAX_PROCESS_ID).')


class _LibraryInfoFilter(logging_std.Filter):
  """Drops INFO chatter from library internals (Orbax, TFDS, grain); warnings still pass."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or not any(
      part in record.pathname for part in ('/orbax/', '/tensorflow_datasets/', '/grain/')
    )


def setup_logging():
  """INFO for this project's progress lines, without the libraries' per-call INFO logs."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


def _override_error(argv, error) -> str | None:
  """The message for a `--config.<path>=...` override naming a field the config lacks."""
  key = re.sub(r"^[\"']+|[\"']+$", '', str(error))
  overrides = [a for a in argv if a.startswith('--config.')]
  culprits = [
    a.split('=', 1)[0]
    for a in overrides
    if key in a.split('=', 1)[0][len('--config.') :].split('.')
  ]
  if not culprits:
    return None
  return (
    f'error: {culprits[0]}: the config has no field {key!r}. Configs are locked, so an '
    f'override must name an existing field; see the config file and configs/default.py '
    f'for the fields (e.g. --config.optimizer.lr).'
  )


def run(main, argv: list[str] | None = None):
  """`app.run` of `main(argv)` after the shared start-up: refuses stray arguments, sets up
  logging and joins a multi-process run when one is configured.

  A misspelt `--config.` override exits 2 with one clear line (ml_collections reports it as a
  bare `AttributeError: "'key'"` traceback).
  """

  def start(args):
    if len(args) > 1:
      raise app.UsageError(f'unexpected arguments: {args[1:]}')
    setup_logging()
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    main(args)

  try:
    app.run(start, argv=argv)
  except (AttributeError, KeyError) as e:
    message = None if flags.FLAGS.is_parsed() else _override_error(argv or sys.argv, e)
    if message is None:
      raise
    print(message, file=sys.stderr)
    sys.exit(2)
