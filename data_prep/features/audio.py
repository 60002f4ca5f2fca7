"""Frame-level acoustic features: PyAV decoding to 16 kHz mono, then librosa descriptors.

Framing: 25 ms analysis window (400 samples, FFT size 512) every 10 ms (hop 160 samples), frames
centred on `t = k * 10 ms` (librosa `center=True`), so a clip of N samples gives
`T = 1 + N // 160` frames, i.e. about 100 frames per second.

Columns (`AUDIO_COLUMNS`, AUDIO_DIM = 46), all in their natural units (no normalisation):
  0-12   mfcc_0..12        MFCCs from a 40-band log-mel spectrogram (mfcc_0 ~ log energy)
  13-25  d_mfcc_0..12      first temporal derivative (librosa.feature.delta, width 9)
  26-38  dd_mfcc_0..12     second temporal derivative
  39     pitch_hz          fundamental frequency by YIN (librosa.yin, 64 ms window, 50-600 Hz);
                           YIN always answers, so unvoiced frames hold arbitrary values
  40     rms               root-mean-square amplitude of the 25 ms frame (samples in [-1, 1])
  41     centroid_hz       spectral centroid
  42     bandwidth_hz      spectral bandwidth (2nd order)
  43     rolloff_hz        frequency below which 85 % of the spectral energy lies
  44     flatness          spectral flatness in [0, 1] (1 = noise-like, 0 = tonal)
  45     zcr               zero-crossing rate per sample in [0, 1]
"""

import os

import av
import librosa
import numpy as np

from data_prep.features.media import MediaError, open_stream

SAMPLE_RATE = 16_000
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_FFT = 512
N_MELS = 40
N_MFCC = 13
PITCH_FRAME_LENGTH = 1024  # 64 ms: YIN needs two periods of the lowest pitch in a window
PITCH_FMIN, PITCH_FMAX = 50.0, 600.0

AUDIO_COLUMNS = (
  tuple(f'mfcc_{i}' for i in range(N_MFCC))
  + tuple(f'd_mfcc_{i}' for i in range(N_MFCC))
  + tuple(f'dd_mfcc_{i}' for i in range(N_MFCC))
  + ('pitch_hz', 'rms', 'centroid_hz', 'bandwidth_hz', 'rolloff_hz', 'flatness', 'zcr')
)
AUDIO_DIM = len(AUDIO_COLUMNS)


def load_audio(path: str | os.PathLike) -> np.ndarray:
  """Decodes the first audio stream of `path`, downmixed to mono at SAMPLE_RATE.

  Returns:
    (N,) float32 samples in [-1, 1].
  Raises:
    MediaError: unreadable file, no audio stream, or an audio stream without samples.
  """
  chunks = []
  with open_stream(path, 'audio') as (container, stream):
    resampler = av.AudioResampler(format='flt', layout='mono', rate=SAMPLE_RATE)
    for frame in container.decode(stream):
      chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
  samples = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
  if samples.size == 0:
    raise MediaError(f'{os.fspath(path)}: audio stream holds no samples')
  return samples.astype(np.float32, copy=False)


def frame_features(y: np.ndarray) -> np.ndarray:
  """Acoustic descriptors of a 16 kHz mono signal.

  Args:
    y: (N,) float32 samples at SAMPLE_RATE.
  Returns:
    (T, AUDIO_DIM) float32 with T = 1 + N // HOP_LENGTH; columns as in AUDIO_COLUMNS.
  """
  stft = librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH)
  spec = np.abs(stft)  # (F, T)
  mel = librosa.feature.melspectrogram(S=spec**2, sr=SAMPLE_RATE, n_mels=N_MELS)  # (M, T)
  mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)  # (13, T)
  frame = dict(frame_length=WIN_LENGTH, hop_length=HOP_LENGTH)
  rows = [
    mfcc,
    librosa.feature.delta(mfcc, order=1, mode='nearest'),
    librosa.feature.delta(mfcc, order=2, mode='nearest'),
    librosa.yin(
      y,
      fmin=PITCH_FMIN,
      fmax=PITCH_FMAX,
      sr=SAMPLE_RATE,
      frame_length=PITCH_FRAME_LENGTH,
      hop_length=HOP_LENGTH,
    )[None],
    librosa.feature.rms(y=y, **frame),
    librosa.feature.spectral_centroid(S=spec, sr=SAMPLE_RATE, n_fft=N_FFT),
    librosa.feature.spectral_bandwidth(S=spec, sr=SAMPLE_RATE, n_fft=N_FFT),
    librosa.feature.spectral_rolloff(S=spec, sr=SAMPLE_RATE, n_fft=N_FFT),
    librosa.feature.spectral_flatness(S=spec),
    librosa.feature.zero_crossing_rate(y, **frame),
  ]
  return np.concatenate(rows, axis=0).T.astype(np.float32)  # (T, AUDIO_DIM)


def audio_features(path: str | os.PathLike) -> np.ndarray:
  """Features of the first audio stream of any container FFmpeg reads.

  Returns:
    (T, AUDIO_DIM) float32, T = 1 + (samples at 16 kHz) // 160, i.e. ~100 frames per second.
  Raises:
    MediaError: naming `path`, when it is unreadable or has no usable audio.
  """
  return frame_features(load_audio(path))
