"""Per-example predictions as JSON lines (`eval.py --predictions=FILE`).

One object per real example, in evaluation order (`Trainer.evaluate`), splits one after the
other:

  regression      {"id", "split", "prediction": float, "label": float}
  classification  {"id", "split", "prediction": int (argmax), "label": int,
                   "probabilities": [C floats]}
  iemocap         {"id", "split", "prediction": [4 ints], "label": [4 ints],
                   "probabilities": [4 x [P(absent), P(present)]]}, emotions in the order
                   Neutral, Happy, Sad, Angry (`metrics.IEMOCAP_EMOTIONS`)

Floats are the model's float32 values written exactly (json's shortest repr of the float64 that
holds them). `pandas.read_json(FILE, lines=True)` or `[json.loads(l) for l in open(FILE)]`
reads them.
"""

import json
import os
from typing import Iterator

import numpy as np


def rows(task: str, split: str, host: dict) -> Iterator[dict]:
  """Prediction rows of one split.

  Args:
    task: 'regression', 'classification' or 'iemocap'.
    split: split name written into each row.
    host: `Trainer.evaluate(..., with_ids=True)` arrays: `id` (N,) str; `output` (N,)
      sentiment, (N, C) or (N, 4, 2) probabilities; `target` (N,), (N,) or (N, 4).

  Yields:
    One dict per example, as in the module docstring.
  """
  if task not in ('regression', 'classification', 'iemocap'):
    raise ValueError(f"unknown task {task!r}: expected 'regression', 'classification' or "
                     f"'iemocap'")
  ids, output, target = host['id'], np.asarray(host['output']), np.asarray(host['target'])
  if not len(ids) == len(output) == len(target):
    raise ValueError(f'split {split!r}: {len(ids)} ids, {len(output)} outputs and '
                     f'{len(target)} targets; expected one of each per example.')
  for i, example_id in enumerate(ids):
    row = {'id': str(example_id), 'split': split}
    if task == 'regression':
      row['prediction'], row['label'] = float(output[i]), float(target[i])
    else:
      row['prediction'] = np.argmax(output[i], axis=-1).tolist()
      row['label'] = np.asarray(target[i]).astype(int).tolist()
      row['probabilities'] = output[i].tolist()
    yield row


def write(path: str, all_rows) -> int:
  """Writes `all_rows` (dicts) as JSON lines to `path` (replaced atomically); returns the count.

  A relative `path` is relative to the current directory; missing parent directories are made.
  """
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp, count = path + '.tmp', 0
  with open(tmp, 'w') as f:
    for row in all_rows:
      f.write(json.dumps(row) + '\n')
      count += 1
  os.replace(tmp, path)
  return count


def read(path: str) -> list[dict]:
  """The rows of a predictions file, in file order."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
