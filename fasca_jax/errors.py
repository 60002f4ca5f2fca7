"""Errors a user can fix: a config value, a workdir, a dataset or a source file that the run cannot
use. Their message is one line naming the value and what to do; the entry points (`cli.run`,
`python -m data_prep.build`) print it as `error: <message>` and exit with status 1, without a
traceback. Every other exception is a bug and keeps its traceback.

Each class also derives from the built-in exception a caller would expect (ValueError,
FileNotFoundError), so `except ValueError` keeps working.
"""


class UserError(Exception):
  """Something in what the user asked for, not in the code."""


class ConfigError(UserError, ValueError):
  """A config value the run cannot use (names the field, the value and what would be valid)."""


class MissingError(UserError, FileNotFoundError):
  """A file, dataset or checkpoint the run needs is not there (says how to make it)."""
