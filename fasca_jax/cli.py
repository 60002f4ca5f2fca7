"""Running the absl entry points (train.py, eval.py) with readable command-line errors."""

import re
import sys

from absl import app
from absl import flags


def _override_error(argv, error) -> str | None:
  """The message for a `--config.<path>=...` override naming a field the config lacks."""
  key = re.sub(r"^[\"']+|[\"']+$", '', str(error))
  overrides = [a for a in argv if a.startswith('--config.')]
  culprits = [a.split('=', 1)[0] for a in overrides
              if key in a.split('=', 1)[0][len('--config.'):].split('.')]
  if not culprits:
    return None
  return (f'error: {culprits[0]}: the config has no field {key!r}. Configs are locked, so an '
          f'override must name an existing field; see the config file and configs/default.py '
          f'for the fields (e.g. --config.optimizer.lr).')


def run(main):
  """`app.run(main)`, except that a misspelt `--config.` override exits 2 with one clear line.

  ml_collections reports such an override as a bare `AttributeError: "'key'"` traceback.
  """
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:
    message = None if flags.FLAGS.is_parsed() else _override_error(sys.argv, e)
    if message is None:
      raise
    print(message, file=sys.stderr)
    sys.exit(2)
