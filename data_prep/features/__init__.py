"""Route B feature extraction: per-clip (T, D) float32 features from raw media and text.

Modules:
  media.py    PyAV opening with errors that name the file (`MediaError`).
  audio.py    `audio_features(path) -> (T, AUDIO_DIM)`, 16 kHz mono, 10 ms hop.
  vision.py   `vision_features(path) -> (T, VISION_DIM)`, 5 frames per second.
  text.py     `TextEncoder(model_dir).encode(texts) -> [(T_i, D)]`, a local BERT-family checkpoint.
  extract.py  parallel, cached, resumable extraction over a folder of clips (+ a CLI).

Nothing heavy is imported here, so `import data_prep.features.audio` stays cheap in workers.
"""
