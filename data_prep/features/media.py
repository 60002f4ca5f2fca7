"""Opening media files with PyAV, with errors that always name the offending file."""

import contextlib
import os
from collections.abc import Iterator

import av


class MediaError(ValueError):
  """A clip cannot be used: unreadable container, no stream of the wanted kind, or no data."""


@contextlib.contextmanager
def open_stream(
  path: str | os.PathLike, kind: str
) -> Iterator[tuple[av.container.InputContainer, av.stream.Stream]]:
  """Opens `path` and yields `(container, first stream of kind)`; kind is 'audio' or 'video'.

  Raises:
    MediaError: the file is missing or unreadable (message names the file), or it has no `kind`
      stream. FFmpeg errors raised while the caller decodes inside the block are re-raised as
      MediaError naming the file too.
  """
  path = os.fspath(path)
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise MediaError(f'{path}: cannot open media ({e})') from e
  with container:
    streams = getattr(container.streams, kind)
    if not streams:
      raise MediaError(f'{path}: no {kind} stream')
    try:
      yield container, streams[0]
    except av.error.FFmpegError as e:
      raise MediaError(f'{path}: cannot decode {kind} ({e})') from e
