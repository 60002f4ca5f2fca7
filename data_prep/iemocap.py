"""`iemocap`: IEMOCAP utterances with four binary emotion labels, from the MulT pickles.

Configs: `mult_aligned` (`iemocap_data.pkl`) and `mult_unaligned` (`iemocap_data_noalign.pkl`),
text 300 (GloVe), audio 74 (COVAREP), vision 35 (Facet). `label` (4,) int32 is, for Neutral,
Happy, Sad, Angry, the argmax of MulT's (4, 2) one-hot rows: 1 present, 0 absent (a row that is
not one-hot is an error). No transcripts. `data_prep.mult` documents ids and padding. Splits are
'train', 'validation', 'test' (MulT sizes 2717/798/938).
"""

from data_prep import builder_lib

DIMS = {'text': 300, 'audio': 74, 'vision': 35}


def _config(name: str, aligned: bool, file: str) -> builder_lib.SourceConfig:
  """A MulT IEMOCAP config reading `file`."""
  return builder_lib.SourceConfig(
    name=name,
    source='mult',
    aligned=aligned,
    pickle_name=file,
    dims=DIMS,
    task='iemocap',
    raw_text=False,
    description=f'IEMOCAP, MulT GloVe features (MulT release {file}).',
  )


class Iemocap(builder_lib.AffectBuilder):
  """IEMOCAP four-emotion recognition (Busso et al., 2008) from MulT features."""

  BUILDER_CONFIGS = [
    _config('mult_aligned', True, 'iemocap_data.pkl'),
    _config('mult_unaligned', False, 'iemocap_data_noalign.pkl'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = builder_lib.manual_instructions(BUILDER_CONFIGS)
