"""Names of the datasets' class labels, defined once: the builders encode labels with them and
the tasks name predictions with them. Pure Python (configs import it)."""

# IEMOCAP (MulT): four binary emotions, in the order of the label axis (N, 4).
IEMOCAP_EMOTIONS = ('Neutral', 'Happy', 'Sad', 'Angry')
# MELD: `label` is the index in MELD_EMOTIONS, `sentiment` the index in MELD_SENTIMENTS.
MELD_EMOTIONS = ('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust', 'anger')
MELD_SENTIMENTS = ('negative', 'neutral', 'positive')
# CMU-MOSEI (CSD `All Labels` columns 1-6): the order of cmu_mosei/csd's `emotions` (N, 6).
MOSEI_EMOTIONS = ('happy', 'sad', 'anger', 'surprise', 'disgust', 'fear')

# (dataset, target field) -> class names of a classification run on it.
CLASS_NAMES = {
  ('meld', 'label'): MELD_EMOTIONS,
  ('meld', 'sentiment'): MELD_SENTIMENTS,
  ('cmu_mosei', 'emotions'): MOSEI_EMOTIONS,
}
