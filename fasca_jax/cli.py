"""What every entry point (train.py, eval.py, ablate.py, predict.py, visualize.py) shares: the
distributed flags, the start-up (`logs.setup_logging`, `jax.distributed`) and readable
command-line errors. An entry point defines its own flags and `main(argv)` and ends with
`cli.run(main)`."""

import re
import sys

from absl import app
from absl import flags

from fasca_jax import distributed
from fasca_jax import errors
from fasca_jax import logs

_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  None,
  'host:port of process 0 for multi-process runs (or $JAX_COORDINATOR_ADDRESS).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Process count (or $JAX_NUM_PROCESSES).'
)
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (or $JAX_PROCESS_ID).')


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
  bare `AttributeError: "'key'"` traceback). A `errors.UserError` (a value, workdir or file the
  run cannot use) exits 1 with its one-line message; Ctrl-C outside the training loop (which
  saves and stops, see `checkpoints.Preemption`) exits 130 with one line.
  """

  def start(args):
    if len(args) > 1:
      raise app.UsageError(f'unexpected arguments: {args[1:]}')
    logs.setup_logging()
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    main(args)

  try:
    app.run(start, argv=argv)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print(
      'Interrupted (Ctrl-C): the checkpoints saved so far are kept; the same command carries on '
      'from them.',
      file=sys.stderr,
    )
    sys.exit(130)
  except (AttributeError, KeyError) as e:
    message = None if flags.FLAGS.is_parsed() else _override_error(argv or sys.argv, e)
    if message is None:
      raise
    print(message, file=sys.stderr)
    sys.exit(2)
