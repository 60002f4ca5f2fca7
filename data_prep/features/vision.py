"""Per-frame visual descriptors: PyAV decoding sampled at 5 frames per second.

No face detector or face-expression model is available offline, so these are generic, cheap
whole-frame descriptors (in the spirit of colour/texture/motion baselines), not facial action units.

Sampling: step k (time k / FPS seconds after the first frame) takes the frame on screen at that
time; a clip lasting d seconds gives T = ceil(d * FPS) steps (at least 1). Each sampled frame is
scaled to THUMB x THUMB RGB (area interpolation) and values are taken in [0, 1].

Columns (`VISION_COLUMNS`, VISION_DIM = 27):
  0-15   thumb_r_c       4x4 grayscale thumbnail (block means of the luma, row-major)
  16-18  mean_r/g/b      colour moments: channel means
  19-21  std_r/g/b       channel standard deviations
  22-24  skew_r/g/b      cube root of the third central moment (signed, same units as the mean)
  25     gradient        mean luma gradient magnitude (texture / sharpness)
  26     motion          mean |luma_t - luma_(t-1)| between consecutive steps (0 at step 0)
"""

import math
import os
from collections.abc import Callable

import av
import numpy as np

from data_prep.features.media import MediaError, open_stream

FPS = 5
THUMB = 32  # working resolution of each sampled frame
GRID = 4  # thumbnail grid: GRID x GRID luma block means
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

VISION_COLUMNS = (
  tuple(f'thumb_{r}_{c}' for r in range(GRID) for c in range(GRID))
  + tuple(f'{m}_{ch}' for m in ('mean', 'std', 'skew') for ch in 'rgb')
  + ('gradient', 'motion')
)
VISION_DIM = len(VISION_COLUMNS)


def _to_thumb(frame: av.VideoFrame) -> np.ndarray:
  """Returns the frame as (THUMB, THUMB, 3) float32 RGB in [0, 1]."""
  rgb = frame.to_ndarray(width=THUMB, height=THUMB, format='rgb24', interpolation='AREA', threads=1)
  return rgb.astype(np.float32) / 255.0


def sample_frames(
  path: str | os.PathLike, convert: Callable[[av.VideoFrame], np.ndarray] = _to_thumb
) -> np.ndarray:
  """Decodes the first video stream and samples it at FPS.

  Args:
    path: the media file.
    convert: each sampled frame -> an array (default `_to_thumb`); called once per distinct
      frame on screen at a sample time.

  Returns:
    (T, ...) the converted samples stacked, T = ceil(duration * FPS) >= 1; by default
    (T, THUMB, THUMB, 3) float32 RGB in [0, 1].
  Raises:
    MediaError: unreadable file, no video stream, or a stream without frames.
  """
  thumbs = []
  step = 0  # index of the next sample time, step / FPS seconds after the first frame
  shown, shown_thumb, start, time = None, None, None, 0.0
  with open_stream(path, 'video') as (container, stream):
    frame_rate = float(stream.average_rate) if stream.average_rate else FPS
    for index, frame in enumerate(container.decode(stream)):
      frame_time = frame.time if frame.time is not None else index / frame_rate
      start = frame_time if start is None else start
      time = frame_time - start
      while shown is not None and step / FPS < time:  # sample times before this frame see `shown`
        shown_thumb = convert(shown) if shown_thumb is None else shown_thumb
        thumbs.append(shown_thumb)
        step += 1
      shown, shown_thumb = frame, None
    if shown is None:
      raise MediaError(f'{os.fspath(path)}: video stream holds no frames')
    end = time + 1.0 / frame_rate  # the last frame stays on screen for one frame period
    last = convert(shown) if shown_thumb is None else shown_thumb
    total = max(1, math.ceil(end * FPS - 1e-6))  # samples strictly before `end`
    thumbs.extend([last] * (total - step))
  return np.stack(thumbs)


def frame_descriptors(frames: np.ndarray) -> np.ndarray:
  """Descriptors of a sampled frame sequence.

  Args:
    frames: (T, H, W, 3) float32 RGB in [0, 1], H and W divisible by GRID.
  Returns:
    (T, VISION_DIM) float32, columns as in VISION_COLUMNS.
  """
  t, h, w, _ = frames.shape
  luma = frames @ _LUMA  # (T, H, W)
  thumb = luma.reshape(t, GRID, h // GRID, GRID, w // GRID).mean(axis=(2, 4)).reshape(t, -1)
  pixels = frames.reshape(t, -1, 3)  # (T, H*W, 3)
  mean = pixels.mean(axis=1)  # (T, 3)
  centred = pixels - mean[:, None]
  std = np.sqrt((centred**2).mean(axis=1))
  skew = np.cbrt((centred**3).mean(axis=1))
  gy, gx = np.gradient(luma, axis=(1, 2))
  gradient = np.sqrt(gx**2 + gy**2).mean(axis=(1, 2))  # (T,)
  motion = np.concatenate([[0.0], np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))])  # (T,)
  columns = [thumb, mean, std, skew, gradient[:, None], motion[:, None]]
  return np.concatenate(columns, axis=1).astype(np.float32)


def vision_features(path: str | os.PathLike) -> np.ndarray:
  """Features of the first video stream of any container FFmpeg reads.

  Returns:
    (T, VISION_DIM) float32, T = ceil(duration * FPS) (5 steps per second).
  Raises:
    MediaError: naming `path`, when it is unreadable or has no usable video.
  """
  return frame_descriptors(sample_frames(path))
