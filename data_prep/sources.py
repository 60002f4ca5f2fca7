"""Pieces shared by the source readers (`mmsa`, `mult`, `csd`): errors, build log, checks.

Every reader turns one released source format into an iterator of contract examples (see
`DESIGN.md`, "The example contract"). A source that breaks its documented format raises
`SourceError` whose message names the file, the split, the example id and the field; a value the
contract can repair (a non-finite feature value -> 0) or an example it must drop is counted in a
`RepairLog` under (split, field, kind), with the file and the first few example ids. The same log
records the SHA-256 and size of every source file the build read (`RepairLog.add_source`) and
notes such as which folds were used; builders write it as `repairs.json` beside the data.
"""

import collections
import dataclasses
import hashlib
import json
import math
import os

import numpy as np

from data_prep import safe_pickle
from fasca_jax import errors

# Split names in the released files -> TFDS split names.
SPLIT_NAMES = {'train': 'train', 'valid': 'validation', 'test': 'test'}
MODALITIES = ('text', 'audio', 'vision')
# Example ids kept per log entry, so every repair can be traced without flooding the log.
MAX_EXAMPLE_IDS = 3
# A builder's RepairLog, in its dataset directory data_dir/<name>/<config>/<version>/.
REPAIRS_FILE = 'repairs.json'
# Key of the source digests in a built dataset's metadata (`builder.info.metadata`).
SOURCES_METADATA = 'sources'


def file_digest(path) -> dict:
  """{'sha256': hex digest, 'bytes': size} of the file at `path` (streamed, not held in memory)."""
  with open(path, 'rb') as f:
    digest = hashlib.file_digest(f, 'sha256')
  return {'sha256': digest.hexdigest(), 'bytes': os.path.getsize(path)}


class SourceError(errors.UserError, ValueError):
  """A source file does not follow its documented format (`python -m data_prep.build` prints
  the message as one line)."""


def where(path, split=None, example=None, field=None) -> str:
  """Location prefix for messages: 'file F, split S, example E, field X' (given parts only)."""
  parts = [f'file {os.fspath(path)}']
  for name, value in (('split', split), ('example', example), ('field', field)):
    if value is not None:
      parts.append(f'{name} {value}')
  return ', '.join(parts)


@dataclasses.dataclass
class _Entry:
  """Count, files and first example ids of one (split, field, kind)."""

  count: int = 0
  files: set = dataclasses.field(default_factory=set)
  examples: list = dataclasses.field(default_factory=list)


class RepairLog:
  """A build's log: repairs and drops per (split, field, kind), the source files read, notes.

  Splits are named as in the source ('train', 'valid', 'test'; 'unassigned' for CSD videos in no
  fold). Kinds and what their count counts:
    nonfinite_to_zero         feature values set to 0
    not_utf8_to_cp1252        MELD CSV lines with bytes that are not UTF-8 (each line listed)
    dropped_nonfinite_label   examples dropped
    generated_id              ids generated (MulT split without `id`)
    dropped_no_words          CSD segments dropped (no word inside)
    word_without_rows_zeroed  CSD word rows given zeros (no frame overlaps the word: the SDK's
                              `impute`), counted per example row
    nonfinite_mean_to_zero    CSD word-mean values set to 0 (a non-finite frame in the word)
    word_too_short_skipped    CSD words skipped (interval shorter than the SDK's epsilon)
    segment_too_short_skipped CSD labelled segments skipped (shorter than the SDK's epsilon)
    dropped_video_missing     CSD videos dropped (absent from the named sequence)
    video_not_in_folds        CSD labelled videos left out (in no fold)

  `sources` maps each source file's name to {'sha256', 'bytes'} (`add_source`); `notes` maps a
  topic (e.g. 'folds') to a sentence. `write` stores all three; `read` also reads the plain list
  of rows that builds before the sources were recorded wrote.
  """

  def __init__(self):
    self._entries = collections.defaultdict(_Entry)
    self.sources: dict[str, dict] = {}
    self.notes: dict[str, str] = {}

  def add_source(self, path, name: str | None = None) -> dict:
    """Records the SHA-256 and size of the file at `path` under `name` (default its base name)."""
    digest = file_digest(path)
    self.sources[name or os.path.basename(os.fspath(path))] = digest
    return digest

  def note(self, topic: str, text: str):
    """Records a sentence about the build (e.g. topic 'folds': which folds file was used)."""
    self.notes[topic] = text

  def add(
    self,
    kind: str,
    *,
    path,
    split: str,
    example: str,
    field: str,
    count: int = 1,
    keep_all: bool = False,
  ):
    """Records `count` events of `kind` on `field` of `example` from file `path`.

    The entry keeps the first MAX_EXAMPLE_IDS examples, or every one with `keep_all` (for rare
    events that must all be traceable, e.g. the CSV lines that are not UTF-8).
    """
    entry = self._entries[(split, field, kind)]
    entry.count += int(count)
    entry.files.add(os.path.basename(os.fspath(path)))
    if (keep_all or len(entry.examples) < MAX_EXAMPLE_IDS) and example not in entry.examples:
      entry.examples.append(example)

  def counts(self) -> dict[tuple[str, str, str], int]:
    """{(split, field, kind): count}."""
    return {key: entry.count for key, entry in self._entries.items()}

  def to_json(self) -> list[dict]:
    """JSON-ready rows {split, field, kind, count, files, examples}; train, valid, test first."""
    order = list(SPLIT_NAMES)

    def key(item):
      (split, field, kind), _ = item
      return (order.index(split) if split in order else len(order), split, field, kind)

    return [
      {
        'split': s,
        'field': f,
        'kind': k,
        'count': e.count,
        'files': sorted(e.files),
        'examples': list(e.examples),
      }
      for (s, f, k), e in sorted(self._entries.items(), key=key)
    ]

  @classmethod
  def from_json(cls, rows: list[dict]) -> 'RepairLog':
    """Inverse of `to_json`."""
    log = cls()
    for row in rows:
      log._entries[(row['split'], row['field'], row['kind'])] = _Entry(
        row['count'], set(row['files']), list(row['examples'])
      )
    return log

  def to_record(self) -> dict:
    """{'sources': {name: {'sha256', 'bytes'}}, 'notes': {topic: text}, 'repairs': rows}."""
    return {'sources': dict(self.sources), 'notes': dict(self.notes), 'repairs': self.to_json()}

  @classmethod
  def from_record(cls, record) -> 'RepairLog':
    """Inverse of `to_record`; a plain list is the rows of a log written before sources were."""
    if isinstance(record, list):
      return cls.from_json(record)
    log = cls.from_json(record['repairs'])
    log.sources, log.notes = dict(record.get('sources', {})), dict(record.get('notes', {}))
    return log

  @staticmethod
  def is_record(data) -> bool:
    """Whether parsed JSON `data` is a log written by `write` (now or before sources were)."""
    return isinstance(data, list) or (isinstance(data, dict) and 'repairs' in data)

  def write(self, path):
    """Writes `to_record()` to `path`."""
    with open(path, 'w') as f:
      json.dump(self.to_record(), f, indent=1)

  @classmethod
  def read(cls, path) -> 'RepairLog':
    """Reads a log written by `write`."""
    with open(path) as f:
      return cls.from_record(json.load(f))

  def summary(self) -> str:
    """Human-readable table, one line per (split, field, kind); 'no repairs or drops' if empty."""
    rows = self.to_json()
    if not rows:
      return 'no repairs or drops'
    table = [('split', 'field', 'kind', 'count', 'files; e.g. examples')] + [
      (r['split'], r['field'], r['kind'], str(r['count']), _files_and_examples(r)) for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return '\n'.join(
      '  '.join(
        [*(cell.ljust(w) for cell, w in zip(row[:3], widths)), row[3].rjust(widths[3]), row[4]]
      )
      for row in table
    )

  def sources_summary(self) -> str:
    """One line per source file, 'sha256  bytes  name', then one per note; '' if neither."""
    lines = [f'{d["sha256"]}  {d["bytes"]:>13,d}  {name}' for name, d in self.sources.items()]
    lines += [f'{topic}: {text}' for topic, text in self.notes.items()]
    return '\n'.join(lines)


def empty_split_error(name: str, split: str, log: 'RepairLog') -> SourceError:
  """The error for a split left without examples: one line with what the log dropped there."""
  drops = [
    f'{r["kind"]} of {r["field"]}: {r["count"]} (e.g. {", ".join(r["examples"][:MAX_EXAMPLE_IDS])})'
    for r in log.to_json()
    if r['split'] == split
  ]
  return SourceError(
    f'{name}: split {split!r} has no examples left'
    + (f' after the repairs and drops: {"; ".join(drops)}' if drops else ' (the source has none)')
    + '. Check the source files; nothing was written.'
  )


def row_count(part, keys, context: str) -> int:
  """N of a split: the leading size that most of the `keys` arrays present in `part` share (the
  earlier key on a tie), so that the array with a wrong row count is the one blamed.

  Raises:
    SourceError: none of `keys` is an array with rows.
  """
  sizes = [np.shape(part[k])[0] for k in keys if k in part and np.ndim(part[k])]
  if not sizes:
    raise SourceError(f'{context}: none of {list(keys)} holds rows')
  counts = collections.Counter(sizes)
  return max(counts, key=lambda n: (counts[n], -sizes.index(n)))


def _files_and_examples(row: dict) -> str:
  """'a.pkl; e.g. x, y, z' (+ how many more examples the repairs file lists)."""
  shown, more = row['examples'][:MAX_EXAMPLE_IDS], len(row['examples']) - MAX_EXAMPLE_IDS
  extra = f' (+{more} more in {REPAIRS_FILE})' if more > 0 else ''
  return f'{", ".join(row["files"])}; e.g. {", ".join(shown)}{extra}'


def require_keys(mapping, keys, context: str):
  """Raises SourceError naming every key of `keys` missing from `mapping`."""
  if not isinstance(mapping, dict):
    raise SourceError(f'{context}: expected a dict, found {type(mapping).__name__}')
  missing = [k for k in keys if k not in mapping]
  if missing:
    raise SourceError(f'{context}: missing keys {missing}; found {sorted(map(str, mapping))}')


def check_array(
  value, *, rank: int, context: str, num: int | None = None, last_dim: int | None = None
) -> np.ndarray:
  """`value` as an array of rank `rank`, leading size `num` and last size `last_dim` (if given).

  Raises:
    SourceError naming `context`, the expected and the found shape.
  """
  array = np.asarray(value)
  expected = ['N' if num is None else str(num)] + ['?'] * (rank - 1)
  if last_dim is not None:
    expected[-1] = str(last_dim)
  bad = (
    array.ndim != rank
    or (num is not None and array.shape[0] != num)
    or (last_dim is not None and array.shape[-1] != last_dim)
  )
  if bad:
    raise SourceError(f'{context}: expected shape ({", ".join(expected)}), found {array.shape}')
  return array


def decode(value) -> str:
  """A str/bytes/NumPy string or number as a Python str (bytes as UTF-8, bad bytes replaced)."""
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode('utf-8', errors='replace')
  return str(value)


def finite_features(
  value, *, log: RepairLog, path, split: str, example: str, field: str
) -> np.ndarray:
  """(T, D) features as float32 with non-finite values set to 0 and counted in `log`."""
  out = np.array(value, dtype=np.float32)  # A copy: the source array is never modified.
  bad = ~np.isfinite(out)
  if bad.any():
    out[bad] = 0.0
    log.add(
      'nonfinite_to_zero', path=path, split=split, example=example, field=field, count=bad.sum()
    )
  return out


def finite_label(
  value, *, log: RepairLog, path, split: str, example: str, field: str
) -> float | None:
  """A scalar label as float, or None (counted as a dropped example) when it is not finite."""
  label = float(value)
  if math.isfinite(label):
    return label
  log.add('dropped_nonfinite_label', path=path, split=split, example=example, field=field)
  return None


def load_pickle_splits(path) -> dict:
  """Loads a released pickle (restricted unpickler) and checks it holds 'train'/'valid'/'test'."""
  data = safe_pickle.load(path)
  require_keys(data, tuple(SPLIT_NAMES), where(path))
  return data


def check_lengths(lengths, limit: int, ids, *, path, split: str, field: str) -> np.ndarray:
  """(N,) ints in [0, limit]; SourceError naming the first example outside (and the value)."""
  lengths = np.asarray(lengths)
  rounded = np.rint(lengths).astype(np.int64)
  bad = np.flatnonzero((rounded != lengths) | (rounded < 0) | (rounded > limit))
  if bad.size:
    i = bad[0]
    raise SourceError(
      f'{where(path, split, decode(ids[i]), field)}: length {lengths[i]} is not '
      f'an integer in [0, {limit}] ({bad.size} such examples)'
    )
  return rounded
