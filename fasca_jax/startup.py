"""No waiting at start: XLA's persistent compilation cache and the clock from process start.

`config.compilation_cache_dir` (default `$XDG_CACHE_HOME/fasca_jax/xla`, i.e.
`~/.cache/fasca_jax/xla`) keeps every compiled program across runs, so a second run of the same
config loads its programs instead of compiling them; an empty value disables the cache. When
`$JAX_COMPILATION_CACHE_DIR` is set, JAX already uses that directory and it wins (the tests give
each session its own).
"""

import os
import time

from absl import logging
import jax

_IMPORTED = time.time()


def default_cache_dir() -> str:
  """`$XDG_CACHE_HOME/fasca_jax/xla`, `~/.cache/fasca_jax/xla` without it."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'fasca_jax', 'xla')


def enable_compilation_cache(cache_dir: str | None):
  """Points JAX's persistent compilation cache at `cache_dir` (every program, however quick to
  compile, is kept); '' or None disables it. `$JAX_COMPILATION_CACHE_DIR` wins when set."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    cache_dir = os.environ['JAX_COMPILATION_CACHE_DIR']
  elif not cache_dir:
    jax.config.update('jax_enable_compilation_cache', False)
    logging.info('Persistent compilation cache disabled (config.compilation_cache_dir is empty).')
    return
  cache_dir = os.path.expanduser(cache_dir)
  if jax.config.jax_compilation_cache_dir != cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', cache_dir)
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  logging.info('Persistent compilation cache: %s', cache_dir)


def process_start() -> float:
  """The wall-clock time this process started (Linux /proc), else when this module loaded."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/stat') as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith('btime'))
    return boot + start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError, StopIteration):
    return _IMPORTED


def seconds_since_start() -> float:
  return time.time() - process_start()
