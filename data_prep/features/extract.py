"""Parallel, cached, resumable audio/vision extraction over a set of clips.

Extractors (`EXTRACTOR_SETS`, chosen per modality by name; the defaults first):
  audio   librosa  (AUDIO_DIM = 46)    data_prep/features/audio.py: MFCCs + deltas, pitch, ...
          egemaps  (EGEMAPS_DIM = 25)  data_prep/features/egemaps.py: openSMILE eGeMAPSv02 LLDs
  vision  frame    (VISION_DIM = 27)   data_prep/features/vision.py: whole-frame descriptors
          face     (FACE_DIM = 32)     data_prep/features/face.py: largest Haar-cascade face,
                                       descriptors of the crop + presence and box

Cache layout: `<cache_dir>/<cache_name>/<clip_id>.npy`, one (T, D) float32 array per clip
(`cache_name`: the modality for the default extractor, `<modality>_<extractor>` otherwise, so
two extractors never share files), written to a temporary name and then `os.replace`d, so an
interrupted run leaves no partial file and a rerun extracts only what is missing (clips skipped
before are tried again). User features win over both: `<features_dir>/<modality>/<clip_id>.npy`
is used as is for that modality and clip.

CLI (one clip per media file directly inside --input_dir; clip id = file name without extension):
  python -m data_prep.features.extract --input_dir=clips/ --cache_dir=cache/ --num_workers=8 \
      [--audio_extractor=egemaps --vision_extractor=face]
"""

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tqdm
from absl import app, flags, logging

from data_prep.features import audio, egemaps, face, vision

# modality -> extractor name -> (T, D) features of a media file; the first name is the default.
EXTRACTOR_SETS = {
  'audio': {'librosa': audio.audio_features, 'egemaps': egemaps.egemaps_features},
  'vision': {'frame': vision.vision_features, 'face': face.face_features},
}
EXTRACTOR_DIMS = {
  'audio': {'librosa': audio.AUDIO_DIM, 'egemaps': egemaps.EGEMAPS_DIM},
  'vision': {'frame': vision.VISION_DIM, 'face': face.FACE_DIM},
}
DEFAULT_EXTRACTORS = {m: next(iter(names)) for m, names in EXTRACTOR_SETS.items()}
EXTRACTORS = {m: EXTRACTOR_SETS[m][name] for m, name in DEFAULT_EXTRACTORS.items()}
FEATURE_DIMS = {m: EXTRACTOR_DIMS[m][name] for m, name in DEFAULT_EXTRACTORS.items()}
MEDIA_EXTENSIONS = ('mp4', 'mkv', 'avi', 'mov', 'webm', 'wav', 'flac', 'mp3', 'm4a', 'ogg')
PathLike = str | os.PathLike


@dataclasses.dataclass
class ExtractReport:
  """What `extract_folder` did, per modality.

  Attributes:
    extracted: clips extracted by this run.
    cached: clips already in the cache from an earlier run.
    overridden: clips with a user-provided .npy (not extracted, not cached).
    skipped: clip id -> reason (missing file, unreadable media, bad override, ...).
  """

  extracted: dict[str, int]
  cached: dict[str, int]
  overridden: dict[str, int]
  skipped: dict[str, dict[str, str]]

  @classmethod
  def empty(cls, modalities: Iterable[str]) -> 'ExtractReport':
    """A report with zero counts for each modality."""
    modalities = tuple(modalities)
    return cls(*({m: 0 for m in modalities} for _ in range(3)), {m: {} for m in modalities})


def check_extractors(extractors: Mapping[str, str]) -> dict[str, str]:
  """`extractors` (modality -> name) completed with the defaults; ValueError naming the choices
  when a modality or name is unknown."""
  out = dict(DEFAULT_EXTRACTORS)
  for modality, name in extractors.items():
    if name not in EXTRACTOR_SETS.get(modality, {}):
      choices = {m: sorted(names) for m, names in EXTRACTOR_SETS.items()}
      raise ValueError(f'Unknown {modality} extractor {name!r}; the extractors are {choices}.')
    out[modality] = name
  return out


def feature_dim(modality: str, extractor: str | None = None) -> int:
  """D of `modality` extracted by `extractor` (default: the modality's default extractor)."""
  return EXTRACTOR_DIMS[modality][extractor or DEFAULT_EXTRACTORS[modality]]


def cache_name(modality: str, extractor: str | None = None) -> str:
  """The cache folder of a modality's extractor: the modality itself for the default one."""
  extractor = extractor or DEFAULT_EXTRACTORS[modality]
  return modality if extractor == DEFAULT_EXTRACTORS[modality] else f'{modality}_{extractor}'


def cache_path(
  cache_dir: PathLike, modality: str, clip_id: str, extractor: str | None = None
) -> pathlib.Path:
  """`<cache_dir>/<cache_name(modality, extractor)>/<clip_id>.npy`."""
  return pathlib.Path(cache_dir) / cache_name(modality, extractor) / f'{clip_id}.npy'


def override_path(
  features_dir: PathLike | None, modality: str, clip_id: str
) -> pathlib.Path | None:
  """`<features_dir>/<modality>/<clip_id>.npy` if that file exists, else None."""
  if features_dir is None:
    return None
  path = pathlib.Path(features_dir) / modality / f'{clip_id}.npy'
  return path if path.is_file() else None


def load_npy_features(path: PathLike) -> np.ndarray:
  """Loads a (T, D) feature file as float32; raises ValueError naming the file otherwise."""
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: not a readable .npy file ({e})') from e
  if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
    raise ValueError(f'{path}: expected a numeric (T, D) array, got {array.dtype} {array.shape}')
  return array.astype(np.float32, copy=False)


def load_features(
  cache_dir: PathLike,
  features_dir: PathLike | None,
  modality: str,
  clip_id: str,
  extractor: str | None = None,
) -> np.ndarray | None:
  """The (T, D) float32 features of a clip: the user override, else the cache of `extractor`
  (default: the modality's default), else None."""
  path = override_path(features_dir, modality, clip_id) or cache_path(
    cache_dir, modality, clip_id, extractor
  )
  return load_npy_features(path) if path.is_file() else None


def save_atomic(path: pathlib.Path, array: np.ndarray) -> None:
  """Writes `array` to `path` (.npy) via a temporary file and os.replace."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.stem}.{os.getpid()}.tmp.npy')
  np.save(tmp, array)
  os.replace(tmp, path)


def extract_one(
  modality: str, media_path: PathLike, out_path: pathlib.Path, extractor: str | None = None
) -> str | None:
  """Extracts one clip into the cache with `extractor` (default: the modality's default).
  Returns None on success, else why it was skipped.

  Any exception is turned into a reason (type and message, which names the file) so that one bad
  clip among thousands is reported instead of ending the run.
  """
  try:
    function = EXTRACTOR_SETS[modality][extractor or DEFAULT_EXTRACTORS[modality]]
    save_atomic(out_path, function(media_path))
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {e}'
  return None


def _plan(
  clip_paths: Mapping[str, PathLike],
  cache_dir: PathLike,
  modalities: Sequence[str],
  features_dir: PathLike | None,
  report: ExtractReport,
  extractors: Mapping[str, str],
) -> list[tuple[str, str, PathLike]]:
  """Fills the cached/overridden/skipped counts and returns the (modality, id, path) to extract."""
  todo = []
  for clip_id, media_path in clip_paths.items():
    for modality in modalities:
      user_file = override_path(features_dir, modality, clip_id)
      if user_file is not None:
        try:
          load_npy_features(user_file)
          report.overridden[modality] += 1
        except ValueError as e:
          report.skipped[modality][clip_id] = f'bad override: {e}'
      elif cache_path(cache_dir, modality, clip_id, extractors[modality]).is_file():
        report.cached[modality] += 1
      elif not os.path.isfile(media_path):
        report.skipped[modality][clip_id] = f'missing file: {os.fspath(media_path)}'
      else:
        todo.append((modality, clip_id, media_path))
  return todo


def _run(
  todo: list[tuple[str, str, PathLike]],
  cache_dir: PathLike,
  num_workers: int,
  extractors: Mapping[str, str],
) -> Iterable[tuple[str, str, str | None]]:
  """Yields (modality, clip_id, skip reason or None) as extractions finish."""
  jobs = [
    (m, media, cache_path(cache_dir, m, clip_id, extractors[m]), extractors[m])
    for m, clip_id, media in todo
  ]
  if num_workers == 0:
    for (modality, clip_id, _), job in zip(todo, jobs):
      yield modality, clip_id, extract_one(*job)
    return
  context = multiprocessing.get_context('spawn')  # no fork of a process running JAX threads
  with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    futures = {pool.submit(extract_one, *job): task for task, job in zip(todo, jobs)}
    for future in concurrent.futures.as_completed(futures):
      modality, clip_id, _ = futures[future]
      yield modality, clip_id, future.result()


def extract_folder(
  clip_paths: Mapping[str, PathLike],
  out_cache_dir: PathLike,
  modalities: Sequence[str] = ('audio', 'vision'),
  num_workers: int = 0,
  features_dir: PathLike | None = None,
  extractors: Mapping[str, str] | None = None,
) -> ExtractReport:
  """Extracts every (clip, modality) not yet cached nor overridden.

  Args:
    clip_paths: clip id -> media file (a missing file is reported, not fatal).
    out_cache_dir: cache root; results land in `<out_cache_dir>/<cache_name>/<clip_id>.npy`.
    modalities: subset of EXTRACTORS.
    num_workers: worker processes; 0 extracts in this process.
    features_dir: optional root of user features `<features_dir>/<modality>/<clip_id>.npy`.
    extractors: modality -> extractor name (EXTRACTOR_SETS); default the first of each.
  Returns:
    An ExtractReport; skipped clips are also logged with their reason.
  """
  unknown = set(modalities) - set(EXTRACTORS)
  if unknown:
    raise ValueError(f'Unknown modalities {sorted(unknown)}; choose from {sorted(EXTRACTORS)}')
  extractors = check_extractors(extractors or {})
  report = ExtractReport.empty(modalities)
  todo = _plan(clip_paths, out_cache_dir, modalities, features_dir, report, extractors)
  results = _run(todo, out_cache_dir, num_workers, extractors)
  progress = tqdm.tqdm(results, total=len(todo), desc='extract', disable=None)
  for modality, clip_id, reason in progress:
    if reason is None:
      report.extracted[modality] += 1
    else:
      report.skipped[modality][clip_id] = reason
  for modality, skipped in report.skipped.items():
    for clip_id, reason in sorted(skipped.items()):
      logging.warning('Skipped %s of %s: %s', modality, clip_id, reason)
  return report


def scan_folder(
  input_dir: PathLike, extensions: Sequence[str] = MEDIA_EXTENSIONS
) -> dict[str, pathlib.Path]:
  """Media files directly inside `input_dir`, keyed by clip id (file name without extension)."""
  clips = {}
  for path in sorted(pathlib.Path(input_dir).iterdir()):
    if path.is_file() and path.suffix.lower().lstrip('.') in extensions:
      if path.stem in clips:
        raise ValueError(
          f'Two files share the clip id {path.stem!r}: {clips[path.stem]} and {path}'
        )
      clips[path.stem] = path
  return clips


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the CLI flags; only called when run as a script, so importing claims no flag names."""
  flags.DEFINE_string('input_dir', None, 'Folder of media clips.', required=True)
  flags.DEFINE_string(
    'cache_dir', None, 'Output: <cache_dir>/<modality>/<clip_id>.npy.', required=True
  )
  flags.DEFINE_integer('num_workers', os.cpu_count(), 'Worker processes (0 = in-process).')
  flags.DEFINE_list('modalities', list(EXTRACTORS), 'Modalities to extract.')
  flags.DEFINE_string(
    'features_dir', None, 'Optional user features <dir>/<modality>/<clip_id>.npy.'
  )
  flags.DEFINE_list('extensions', list(MEDIA_EXTENSIONS), 'Media file extensions to pick up.')
  flags.DEFINE_enum(
    'audio_extractor', DEFAULT_EXTRACTORS['audio'], list(EXTRACTOR_SETS['audio']), 'Audio set.'
  )
  flags.DEFINE_enum(
    'vision_extractor', DEFAULT_EXTRACTORS['vision'], list(EXTRACTOR_SETS['vision']), 'Vision set.'
  )


def main(argv: Sequence[str]) -> None:
  """Extracts a folder and writes `<cache_dir>/extract_report.json`."""
  del argv
  clips = scan_folder(FLAGS.input_dir, [e.lower().lstrip('.') for e in FLAGS.extensions])
  report = extract_folder(
    clips,
    FLAGS.cache_dir,
    FLAGS.modalities,
    FLAGS.num_workers,
    FLAGS.features_dir,
    extractors={'audio': FLAGS.audio_extractor, 'vision': FLAGS.vision_extractor},
  )
  out = pathlib.Path(FLAGS.cache_dir) / 'extract_report.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True))
  skipped = {m: len(s) for m, s in report.skipped.items()}
  print(
    f'{len(clips)} clips: extracted {report.extracted}, cached {report.cached}, '
    f'overridden {report.overridden}, skipped {skipped}; report in {out}'
  )


if __name__ == '__main__':
  define_flags()
  app.run(main)
