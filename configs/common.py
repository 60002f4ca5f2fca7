"""What the config files share: `parse_arg`, the one parser of a config arg
(`--config=configs/<file>.py:<arg>`), in the manner of big_vision's `configs/common.py`.

Configs import only ml_collections, this module and each other (never the model or the training
stack), so loading a config is cheap and works wherever ml_collections is installed.
"""

from collections.abc import Sequence


def parse_arg(
  arg: str | None, *, allowed: Sequence[str | None], default: str | None, config_file: str
) -> str | None:
  """The config arg of `configs/<config_file>.py`: `arg`, or `default` when it is empty.

  Raises:
    ValueError: the arg is not one of `allowed`; the message lists them.
  """
  arg = arg or default
  if arg not in allowed:
    shown = ', '.join('none' if a is None else repr(a) for a in allowed)
    raise ValueError(f'unknown {config_file} config arg {arg!r}: expected one of {shown}')
  return arg
