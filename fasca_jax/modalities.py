"""The modalities and the FGFA pairs among them. Pure Python: the model, the configs and the
ablations all decide "which pairs exist" here."""

from collections.abc import Sequence

MODALITIES = ('text', 'audio', 'vision')
REFERENCE = 'text'  # every FGFA pair aligns a partner stream to the text stream.


def aligned_pairs(modalities: Sequence[str], align_pairs: Sequence[str]) -> tuple[str, ...]:
  """The partners aligned to text: those of `align_pairs` present in `modalities`, in
  `align_pairs` order; none when text itself is absent."""
  if REFERENCE not in modalities:
    return ()
  return tuple(p for p in align_pairs if p in modalities and p != REFERENCE)
