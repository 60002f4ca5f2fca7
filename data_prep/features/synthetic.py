"""Synthetic clips for smoke tests: a sine tone and a (moving or still) bright square, or given
frames, via PyAV."""

import os

import av
import numpy as np


def square_frames(num_frames: int, height: int, width: int, moving: bool) -> np.ndarray:
  """A bright square on a dark horizontal gradient, sliding left to right when `moving`.

  Returns:
    (num_frames, height, width, 3) uint8 RGB.
  """
  background = np.linspace(20, 80, width, dtype=np.float32)[None, :, None]
  side = max(2, min(height, width) // 3)
  top = (height - side) // 2
  frames = np.broadcast_to(background, (num_frames, height, width, 3)).copy()
  for i in range(num_frames):
    left = (i * (width - side)) // max(1, num_frames - 1) if moving else (width - side) // 2
    frames[i, top : top + side, left : left + side] = (230, 200, 40)
  return frames.astype(np.uint8)


def sine_tone(duration: float, rate: int, hz: float, amplitude: float = 0.5) -> np.ndarray:
  """Returns (N,) float32 samples of a sine wave, N = round(duration * rate)."""
  t = np.arange(round(duration * rate)) / rate
  return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_clip(
  path: str | os.PathLike,
  duration: float = 1.0,
  *,
  tone_hz: float | None = 220.0,
  moving: bool | None = True,
  size: tuple[int, int] = (48, 64),
  fps: int = 25,
  sample_rate: int = 44_100,
  frames: np.ndarray | None = None,
) -> None:
  """Encodes an .mp4 (H.264 + AAC) test clip.

  Args:
    path: output file.
    duration: seconds.
    tone_hz: frequency of the mono audio track; None writes no audio stream.
    moving: True slides the square, False keeps it still; None writes no video stream.
    size: (height, width) of the video, both even.
    fps: video frame rate.
    sample_rate: audio sample rate (resampled to 16 kHz by the extractor).
    frames: (N, H, W, 3) uint8 RGB frames to write instead of the square (`moving` is then only
      None or not; `size` is ignored; H and W even).
  """
  with av.open(os.fspath(path), mode='w') as container:
    streams = []  # every stream must exist before the first packet is muxed
    if moving is not None:
      video = container.add_stream('libx264', rate=fps)
      rgb = square_frames(round(duration * fps), *size, moving=moving) if frames is None else frames
      video.height, video.width = rgb.shape[1:3]
      video.pix_fmt = 'yuv420p'
      streams.append((video, [av.VideoFrame.from_ndarray(f, format='rgb24') for f in rgb]))
    if tone_hz is not None:
      audio = container.add_stream('aac', rate=sample_rate, layout='mono')
      frame = av.AudioFrame.from_ndarray(
        sine_tone(duration, sample_rate, tone_hz)[None], format='fltp', layout='mono'
      )
      frame.sample_rate = sample_rate
      streams.append((audio, [frame]))
    for stream, frames in streams:
      for frame in frames:
        container.mux(stream.encode(frame))
      container.mux(stream.encode(None))
