"""`cmu_mosi`: CMU-MOSI opinion segments with sentiment in [-3, 3], from released features.

Configs (all need files in a manual dir; `CmuMosi.MANUAL_DOWNLOAD_INSTRUCTIONS` lists them):
  mmsa_aligned, mmsa_unaligned  MMSA pickles: text 768 (BERT), audio 5, vision 20; raw_text.
  mult_aligned, mult_unaligned  MulT pickles: text 300 (GloVe), audio 74 (COVAREP), vision 47.
  csd                           CMU-MultimodalSDK `.csd` files, averaged per word (see
                                `data_prep.csd`): text 300, audio 74, vision 35 (Facet 4.2);
                                ids f'{video}[{segment}]'; raw_text; standard folds
                                shipped (a folds.json in the manual dir wins).
The readers (`data_prep.mmsa`, `.mult`, `.csd`) document padding, ids and repairs. Splits are
'train', 'validation', 'test' (MMSA sizes 1284/229/686).
"""

from data_prep import builder_lib, csd

CSD_FILES = csd.CsdFiles(
  labels='CMU_MOSI_Opinion_Labels.csd',
  words='CMU_MOSI_TimestampedWords.csd',
  word_vectors='CMU_MOSI_TimestampedWordVectors.csd',
  audio='CMU_MOSI_COVAREP.csd',
  vision='CMU_MOSI_Visual_Facet_42.csd',
  standard_folds='cmu_mosi',
)


class CmuMosi(builder_lib.AffectBuilder):
  """CMU-MOSI sentiment (Zadeh et al., 2016) from MMSA, MulT or CMU-MultimodalSDK features."""

  BUILDER_CONFIGS = builder_lib.sentiment_configs(
    title='CMU-MOSI',
    mmsa_dir='MOSI/Processed',
    mmsa_dims={'text': 768, 'audio': 5, 'vision': 20},
    mult_prefix='mosi',
    mult_dims={'text': 300, 'audio': 74, 'vision': 47},
    csd_files=CSD_FILES,
    csd_dims={'text': 300, 'audio': 74, 'vision': 35},
    folds_help=builder_lib.folds_help('cmu_mosi', '52/10/31'),
    emotions=False,
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = builder_lib.manual_instructions(BUILDER_CONFIGS)
