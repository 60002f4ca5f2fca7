"""Face-centred per-frame visual descriptors: OpenCV's Haar cascade finds the largest face of each
sampled frame, and the descriptors of `vision.py` are computed on that face crop.

What these are, honestly: the same generic colour / texture / motion descriptors as the
whole-frame set (a 4x4 luma thumbnail, colour moments, gradient energy, frame-difference
motion), computed on the face region, plus where the face is. They are NOT facial action units,
landmarks, gaze or expression estimates (OpenFace, Facet or a face-expression network give
those; none of them installs offline here). The Haar cascade (Viola-Jones,
`haarcascade_frontalface_default.xml`, shipped inside `opencv-python-headless` 4.x) finds
near-frontal faces only; profiles, small or occluded faces are missed.

Sampling is vision.py's (5 frames per second, the frame on screen at each sample time). Each
sampled frame is scaled to DETECT_WIDTH pixels wide (aspect kept) and converted to grey; the
cascade runs with scaleFactor 1.1, minNeighbors 8 and faces of at least MIN_FACE pixels; the
largest box (by area) is the face. Its crop (the RGB box of the scaled frame) is resized to
THUMB x THUMB (area interpolation) and described. When no face is found, the whole frame is
described instead (the whole-frame set's values, `face_present` 0 and the box 0): the fallback
is counted per clip (`FaceFeatures.fallback_frames`, logged by `face_features` and in the MELD
build summary).

Columns (`FACE_COLUMNS`, FACE_DIM = 32):
  0      face_present     1 when a face was found in the sampled frame, else 0
  1-4    face_x, face_y, face_w, face_h   the box, as fractions of the frame width / height
                          (x, y: top-left corner); 0 when no face
  5-31   vision.VISION_COLUMNS of the crop: thumb_r_c (4x4 luma), mean/std/skew per RGB channel,
         gradient, motion (|luma_t - luma_(t-1)| between consecutive crops, 0 at step 0)
"""

import dataclasses
import functools
import os

from absl import logging
import av
import numpy as np

from data_prep.features import vision

DETECT_WIDTH = 320  # frames are scaled to this width for detection and cropping
MIN_FACE = 24  # smallest face side searched, in pixels of the scaled frame
# minNeighbors 8, stricter than the 3-5 of OpenCV's examples: a false box larger than the face (seen
# on a compressed frame of the test photo at 5) would win the largest-face rule.
SCALE_FACTOR, MIN_NEIGHBORS = 1.1, 8
CASCADE = 'haarcascade_frontalface_default.xml'
BOX_COLUMNS = ('face_present', 'face_x', 'face_y', 'face_w', 'face_h')
FACE_COLUMNS = BOX_COLUMNS + vision.VISION_COLUMNS
FACE_DIM = len(FACE_COLUMNS)


@functools.cache
def _cascade():
  """The frontal-face Haar cascade bundled with opencv-python-headless (one per process)."""
  import cv2  # pylint: disable=g-import-not-at-top

  path = os.path.join(cv2.data.haarcascades, CASCADE)
  classifier = cv2.CascadeClassifier(path)
  if classifier.empty():
    raise RuntimeError(
      f'OpenCV could not load its Haar cascade {path}; reinstall opencv-python-headless 4.x'
    )
  return classifier


def detect_face(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
  """The largest face of an image: (x, y, w, h) in pixels, or None.  rgb: (H, W, 3) uint8."""
  import cv2  # pylint: disable=g-import-not-at-top

  grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
  faces = _cascade().detectMultiScale(
    grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(MIN_FACE, MIN_FACE)
  )
  if len(faces) == 0:
    return None
  x, y, w, h = max((tuple(int(v) for v in f) for f in faces), key=lambda f: f[2] * f[3])
  return x, y, w, h


def _thumb(rgb: np.ndarray) -> np.ndarray:
  """(h, w, 3) uint8 -> (THUMB, THUMB, 3) float32 in [0, 1] (area interpolation)."""
  import cv2  # pylint: disable=g-import-not-at-top

  small = cv2.resize(rgb, (vision.THUMB, vision.THUMB), interpolation=cv2.INTER_AREA)
  return small.astype(np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class FaceFeatures:
  """The face-centred features of a frame sequence.

  Attributes:
    features: (T, FACE_DIM) float32, columns as FACE_COLUMNS.
    fallback_frames: how many of the T frames had no face (described whole).
  """

  features: np.ndarray
  fallback_frames: int


def face_descriptors(frames: np.ndarray) -> FaceFeatures:
  """Face-centred descriptors of sampled frames.

  Args:
    frames: (T, H, W, 3) uint8 RGB (already at the detection size).
  Returns:
    FaceFeatures: (T, FACE_DIM) and the number of frames without a face.
  """
  t, height, width, _ = frames.shape
  crops, boxes = [], np.zeros((t, len(BOX_COLUMNS)), np.float32)
  for i, frame in enumerate(frames):
    box = detect_face(frame)
    if box is None:
      crops.append(_thumb(frame))
      continue
    x, y, w, h = box
    crops.append(_thumb(frame[y : y + h, x : x + w]))
    boxes[i] = (1.0, x / width, y / height, w / width, h / height)
  described = vision.frame_descriptors(np.stack(crops))  # (T, VISION_DIM)
  features = np.concatenate([boxes, described], axis=1).astype(np.float32)
  return FaceFeatures(features, fallback_frames=int((boxes[:, 0] == 0).sum()))


def _detection_frame(frame: av.VideoFrame) -> np.ndarray:
  """A decoded frame -> (H', DETECT_WIDTH, 3) uint8 RGB, aspect kept (H' even, >= 2)."""
  height = max(2, round(frame.height * DETECT_WIDTH / frame.width / 2) * 2)
  return frame.to_ndarray(
    width=DETECT_WIDTH, height=height, format='rgb24', interpolation='AREA', threads=1
  )


def sample_face_frames(path: str | os.PathLike) -> np.ndarray:
  """The sampled frames of `path` (vision.py's 5 per second) at the detection size.

  Returns:
    (T, H', DETECT_WIDTH, 3) uint8 RGB.
  Raises:
    MediaError: naming `path`, when it is unreadable or has no usable video.
  """
  return vision.sample_frames(path, convert=_detection_frame)


def face_features(path: str | os.PathLike) -> np.ndarray:
  """Face-centred features of the first video stream of any container FFmpeg reads; logs how
  many sampled frames had no face (described whole).

  Returns:
    (T, FACE_DIM) float32, T = ceil(duration * 5).
  Raises:
    MediaError: naming `path`, when it is unreadable or has no usable video.
  """
  result = face_descriptors(sample_face_frames(path))
  if result.fallback_frames:
    logging.info(
      '%s: no face in %d of %d sampled frames; the whole frame was described there.',
      os.fspath(path),
      result.fallback_frames,
      len(result.features),
    )
  return result.features
