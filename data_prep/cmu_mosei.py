"""`cmu_mosei`: CMU-MOSEI opinion segments with sentiment in [-3, 3], from released features.

Configs (all need files in a manual dir; `CmuMosei.MANUAL_DOWNLOAD_INSTRUCTIONS` lists them):
  mmsa_aligned, mmsa_unaligned  MMSA pickles: text 768 (BERT), audio 74, vision 35; raw_text.
  mult_aligned, mult_unaligned  MulT pickles (`mosei_senti_*`): text 300 (GloVe), audio 74,
                                vision 35.
  csd                           CMU-MultimodalSDK `.csd` files, averaged per word (see
                                `data_prep.csd`): text 300, audio 74, vision 35 (Facet 4.2);
                                ids f'{video}[{segment}]'; raw_text; and `emotions` (6,): happy,
                                sad, anger, surprise, disgust, fear intensities (the
                                `mosei_emotions` task); standard folds shipped (a folds.json
                                in the manual dir wins).
The readers (`data_prep.mmsa`, `.mult`, `.csd`) document padding, ids and repairs. Splits are
'train', 'validation', 'test' (MMSA sizes 16326/1871/4659).
"""

from data_prep import builder_lib, csd

CSD_FILES = csd.CsdFiles(
  labels='CMU_MOSEI_Labels.csd',
  words='CMU_MOSEI_TimestampedWords.csd',
  word_vectors='CMU_MOSEI_TimestampedWordVectors.csd',
  audio='CMU_MOSEI_COVAREP.csd',
  vision='CMU_MOSEI_VisualFacet42.csd',
  standard_folds='cmu_mosei',
)


class CmuMosei(builder_lib.AffectBuilder):
  """CMU-MOSEI sentiment (Zadeh et al., 2018) from MMSA, MulT or CMU-MultimodalSDK features."""

  BUILDER_CONFIGS = builder_lib.sentiment_configs(
    title='CMU-MOSEI',
    mmsa_dir='MOSEI/Processed',
    mmsa_dims={'text': 768, 'audio': 74, 'vision': 35},
    mult_prefix='mosei_senti',
    mult_dims={'text': 300, 'audio': 74, 'vision': 35},
    csd_files=CSD_FILES,
    csd_dims={'text': 300, 'audio': 74, 'vision': 35},
    folds_help=builder_lib.folds_help('cmu_mosei', '2249/300/678'),
    emotions=True,
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = builder_lib.manual_instructions(BUILDER_CONFIGS)
