"""A minimal stand-in for `ml_collections.ConfigDict`, for machines without ml_collections.

The configs (configs/*.py) use ConfigDict only as a dict with attribute access, so where the
package is missing (e.g. a CUDA image with just JAX, Flax, Optax and torch) the benchmarks can
still load them. Locking, field references and the other ConfigDict features are absent; with
ml_collections installed nothing changes.
"""
import sys
import types


class AttrDict(dict):
  """dict with attribute access: `c.model.d_model`, `c.model.d_model = 8`."""

  def __init__(self, initial=None, **kwargs):
    super().__init__()
    for key, value in dict(initial or {}, **kwargs).items():
      self[key] = AttrDict(value) if isinstance(value, dict) else value

  def __getattr__(self, name):
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None

  def __setattr__(self, name, value):
    self[name] = value

  def to_dict(self) -> dict:
    return {k: v.to_dict() if isinstance(v, AttrDict) else v for k, v in self.items()}


def install_if_missing() -> bool:
  """Registers the stand-in as `ml_collections` unless the real package imports; True if so."""
  try:
    import ml_collections  # pylint: disable=g-import-not-at-top,unused-import
    return False
  except ImportError:
    sys.modules['ml_collections'] = types.SimpleNamespace(ConfigDict=AttrDict)
    return True
