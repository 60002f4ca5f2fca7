"""eGeMAPS low-level descriptors (openSMILE) per 10 ms frame: the acoustic set the field reports.

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al., IEEE Trans. Affective
Computing 2016), config eGeMAPSv02 as the `opensmile` PyPI package ships it (the SMILExtract
binary and its configs come inside that wheel; nothing is downloaded), at feature level
`LowLevelDescriptors`: one row per 10 ms frame, the 25 descriptors below, each smoothed by
openSMILE's 3-frame moving average (`_sma3`). The functionals (88 statistics per clip) are not
used: the model reads sequences. Audio is decoded as for the librosa set (`audio.load_audio`:
PyAV, 16 kHz mono).

Framing (openSMILE's): frame k starts at k * 10 ms; most descriptors use a 20 ms window, F0,
jitter, shimmer, HNR and the formants a 60 ms one; a clip of d seconds gives about
100 * d - 4 frames (1 s -> 96).

Columns (`EGEMAPS_COLUMNS`, EGEMAPS_DIM = 25), openSMILE's names and units:
  0   Loudness_sma3                 perceived loudness (sones, auditory-spectrum based)
  1   alphaRatio_sma3               energy 50-1000 Hz over 1-5 kHz (dB)
  2   hammarbergIndex_sma3          strongest peak 0-2 kHz over strongest peak 2-5 kHz (dB)
  3   slope0-500_sma3               spectral slope 0-500 Hz (linear regression of the spectrum)
  4   slope500-1500_sma3            spectral slope 500-1500 Hz
  5   spectralFlux_sma3             change of the spectrum between consecutive frames
  6-9 mfcc1_sma3 .. mfcc4_sma3      MFCCs 1-4
  10  F0semitoneFrom27.5Hz_sma3nz   fundamental frequency, semitones above 27.5 Hz
                                    (f = 27.5 * 2 ** (value / 12) Hz); 0 on unvoiced frames
  11  jitterLocal_sma3nz            period-to-period F0 deviation (relative); 0 when unvoiced
  12  shimmerLocaldB_sma3nz         period-to-period amplitude deviation (dB); 0 when unvoiced
  13  HNRdBACF_sma3nz               harmonics-to-noise ratio (dB); 0 when unvoiced
  14  logRelF0-H1-H2_sma3nz         first minus second harmonic amplitude (dB); 0 when unvoiced
  15  logRelF0-H1-A3_sma3nz         first harmonic minus third-formant amplitude (dB)
  16-18  F1frequency / F1bandwidth / F1amplitudeLogRelF0 _sma3nz   first formant (Hz, Hz, dB)
  19-21  F2... second formant,  22-24  F3... third formant
(`nz`: computed on voiced frames only; openSMILE writes 0 elsewhere.)
"""

import functools
import os

import numpy as np

from data_prep.features import audio
from data_prep.features.media import MediaError

EGEMAPS_COLUMNS = (
  'Loudness_sma3',
  'alphaRatio_sma3',
  'hammarbergIndex_sma3',
  'slope0-500_sma3',
  'slope500-1500_sma3',
  'spectralFlux_sma3',
  'mfcc1_sma3',
  'mfcc2_sma3',
  'mfcc3_sma3',
  'mfcc4_sma3',
  'F0semitoneFrom27.5Hz_sma3nz',
  'jitterLocal_sma3nz',
  'shimmerLocaldB_sma3nz',
  'HNRdBACF_sma3nz',
  'logRelF0-H1-H2_sma3nz',
  'logRelF0-H1-A3_sma3nz',
  'F1frequency_sma3nz',
  'F1bandwidth_sma3nz',
  'F1amplitudeLogRelF0_sma3nz',
  'F2frequency_sma3nz',
  'F2bandwidth_sma3nz',
  'F2amplitudeLogRelF0_sma3nz',
  'F3frequency_sma3nz',
  'F3bandwidth_sma3nz',
  'F3amplitudeLogRelF0_sma3nz',
)
EGEMAPS_DIM = len(EGEMAPS_COLUMNS)
F0_REFERENCE_HZ = 27.5  # F0semitoneFrom27.5Hz: semitones above this frequency.


@functools.cache
def _smile():
  """One openSMILE instance per process (eGeMAPSv02, low-level descriptors)."""
  import opensmile  # pylint: disable=g-import-not-at-top  (heavy: pandas, audinterface)

  return opensmile.Smile(
    feature_set=opensmile.FeatureSet.eGeMAPSv02,
    feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
  )


def frame_features(y: np.ndarray) -> np.ndarray:
  """eGeMAPS LLDs of a 16 kHz mono signal.

  Args:
    y: (N,) float32 samples at `audio.SAMPLE_RATE`.
  Returns:
    (T, EGEMAPS_DIM) float32, T ~ N / 160 - 4 (at least 1 for any signal of >= 60 ms), columns
    as in EGEMAPS_COLUMNS.
  Raises:
    ValueError: openSMILE returned other columns than EGEMAPS_COLUMNS (another openSMILE config).
  """
  frame = _smile().process_signal(np.asarray(y, np.float32), audio.SAMPLE_RATE)
  if tuple(frame.columns) != EGEMAPS_COLUMNS:
    raise ValueError(f'openSMILE eGeMAPSv02 LLD columns changed: {tuple(frame.columns)}')
  return frame.to_numpy(np.float32)


def pitch_hz(features: np.ndarray) -> np.ndarray:
  """The F0 column of `frame_features` in Hz: (T,), 0 on unvoiced frames."""
  semitones = features[:, EGEMAPS_COLUMNS.index('F0semitoneFrom27.5Hz_sma3nz')]
  return np.where(semitones > 0, F0_REFERENCE_HZ * 2.0 ** (semitones / 12.0), 0.0)


def egemaps_features(path: str | os.PathLike) -> np.ndarray:
  """eGeMAPS LLDs of the first audio stream of any container FFmpeg reads.

  Returns:
    (T, EGEMAPS_DIM) float32, one row per 10 ms.
  Raises:
    MediaError: naming `path`, when it is unreadable or has no usable audio.
  """
  features = frame_features(audio.load_audio(path))
  if not len(features):
    raise MediaError(f'{os.fspath(path)}: audio too short for one eGeMAPS frame (60 ms)')
  return features
