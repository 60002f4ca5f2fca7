"""Where FGFA's deformable sampling looked along time, and the cross-modal attention, as PNGs.

The FAR of a pair works on a one-row map (B, 1, T, C) whose columns are the text steps (step 0 is
the CLS step); the partner stream has been resampled onto those steps and fused with the text
by a 1x1 conv, and FAR resamples that fused map. Tap (i, j) of the kh x kw
kernel at text step t samples the partner map at

  row h = i*d - p_h + dy,    column (time) w = t - p_w + j*d + dx

(d the pair's dilation, p = d*(k-1)//2 the padding, (dy, dx) the learned offsets, deform_conv.py).
The map has a single row, so a sample blends in row 0 with weight max(0, 1 - |h|): its effective
weight is mask * max(0, 1 - |h|). Only the middle kernel row starts on the map (h = dy); the
others start d rows away and count only if their dy brings them within one row of it.
"""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from fasca_jax import restored_run


def sampling_positions(offsets, mask, kernel_size, dilation):
  """Sampled time positions and effective weights of every tap at every text step.

  Args:
    offsets: (T, K*2) FAR offsets of one example, (dy, dx) per tap, taps row-major.
    mask: (T, K) FAR modulation (sigmoid) of that example.
    kernel_size: (kh, kw), K = kh*kw.
    dilation: the pair's dilation d.

  Returns:
    positions: (T, K) time position w sampled by each tap (in text steps of the resampled map).
    weights: (T, K) mask * max(0, 1 - |h|), the weight the sample actually gets.
    base: (T, K) the positions without offsets (the plain dilated grid).
  """
  kh, kw = kernel_size
  t, k = mask.shape
  if offsets.shape != (t, 2 * k) or k != kh * kw:
    raise ValueError(
      f'offsets {offsets.shape} / mask {mask.shape} do not match a {kh}x{kw} '
      f'kernel: expected (T, {2 * kh * kw}) and (T, {kh * kw})'
    )
  taps = np.arange(k)
  i, j = taps // kw, taps % kw
  dy, dx = offsets[:, 0::2], offsets[:, 1::2]  # (T, K)
  base = np.arange(t)[:, None] - dilation * (kw - 1) // 2 + j[None, :] * dilation
  h = i[None, :] * dilation - dilation * (kh - 1) // 2 + dy
  return base + dx, mask * np.maximum(0.0, 1.0 - np.abs(h)), base.astype(np.float64)


def plot_sampling(path, pair, offsets, mask, kernel_size, dilation, text_len, partner_len):
  """Writes the sampling plot of one FGFA pair for one example.

  Top: for each real text step (x, CLS at 0), the time positions its taps sampled in the partner
  stream (y), colour and size by effective weight; grey lines are the plain dilated grid. The
  right axis gives the partner's own frame index (the linear resampling undone). Bottom: the
  effective weight of each tap at each text step.

  Args:
    path: output .png.
    pair: partner name ('audio' or 'vision').
    offsets, mask, kernel_size, dilation: as in `sampling_positions` (all T steps).
    text_len: real text steps L_t (without CLS); steps beyond L_t + 1 are padding, not drawn.
    partner_len: real partner steps L_p before resampling (without CLS).
  """
  positions, weights, base = sampling_positions(offsets, mask, kernel_size, dilation)
  n = text_len + 1
  positions, weights, base = positions[:n], weights[:n], base[:n]
  steps = np.arange(n)
  fig, (top, bottom) = plt.subplots(
    2, 1, figsize=(max(7.5, 0.25 * n + 4), 7.5), gridspec_kw={'height_ratios': [3, 1.2]}
  )
  for tap in range(base.shape[1]):
    top.plot(steps, base[:, tap], color='0.85', lw=0.8, zorder=0)
  order = np.argsort(weights, axis=None)  # heaviest samples drawn last
  xs = np.broadcast_to(steps[:, None], positions.shape).reshape(-1)[order]
  w = weights.reshape(-1)[order]
  points = top.scatter(
    xs,
    positions.reshape(-1)[order],
    c=w,
    s=6 + 60 * w,
    cmap='viridis',
    vmin=0.0,
    vmax=1.0,
    edgecolors='none',
  )
  fig.colorbar(points, ax=top, label='effective weight (mask x row overlap)', pad=0.12)
  top.axhspan(-0.5, 0.5, color='0.95', zorder=-1)  # the CLS column of the partner map
  top.set_xlim(-0.5, n - 0.5)
  top.set_xlabel('text step (0 = CLS)')
  top.set_ylabel(f'{pair} position (text steps, resampled)')
  top.set_title(
    f'FGFA {pair}->text: sampled {pair} positions '
    f'({kernel_size[0]}x{kernel_size[1]} taps, dilation {dilation})',
    fontsize=10,
  )
  if text_len > 1 and partner_len > 1:
    scale = (partner_len - 1) / (text_len - 1)  # resample_to: text step u+1 <- partner u*scale+1
    top.secondary_yaxis(
      'right', functions=(lambda y: (y - 1) * scale, lambda f: f / scale + 1)
    ).set_ylabel(f'{pair} frame (0 = first real frame)')
  image = bottom.imshow(
    weights.T, aspect='auto', cmap='viridis', vmin=0.0, vmax=1.0, interpolation='nearest'
  )
  bottom.set_xlabel('text step (0 = CLS)')
  bottom.set_ylabel('tap (row-major)')
  bottom.set_yticks(range(weights.shape[1]))
  fig.colorbar(image, ax=bottom, label='effective weight', pad=0.12)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_cross_attention(path, query, weights, query_len, keys):
  """Writes the heat map of one modality's cross-modal attention for one example.

  Args:
    path: output .png.
    query: the querying modality.
    weights: (N, T_q + 1, sum_o (T_o + 1)) attention weights of the last fusion layer (heads N).
    query_len: real steps of the query modality (without CLS).
    keys: [(modality, padded steps T_o, real steps L_o)] of the attended modalities, in the
      order their steps are concatenated.
  """
  mean = weights.mean(0)[: query_len + 1]  # (L_q + 1, sum_o (T_o + 1)), averaged over heads
  columns, edges, start = [], [0], 0
  for _, padded, real in keys:
    columns.append(mean[:, start : start + real + 1])  # CLS + real steps of that modality
    start += padded + 1
    edges.append(edges[-1] + real + 1)
  shown = np.concatenate(columns, axis=1)
  fig, ax = plt.subplots(
    figsize=(max(7.5, 0.02 * shown.shape[1] + 5), max(4.0, 0.12 * shown.shape[0] + 2))
  )
  image = ax.imshow(shown, aspect='auto', cmap='magma', interpolation='nearest')
  for edge in edges[1:-1]:
    ax.axvline(edge - 0.5, color='white', lw=1.0)
  ax.set_xticks([(a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:])])
  ax.set_xticklabels([f'{m} (CLS + {real})' for m, _, real in keys])
  ax.set_ylabel(f'{query} step (0 = CLS)')
  ax.set_title(
    f'{query} attending to the other modalities (last fusion layer, mean of '
    f'{weights.shape[0]} heads)',
    fontsize=10,
  )
  fig.colorbar(image, ax=ax, label='attention weight')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_example(out_dir, config, batch, intermediates) -> list[str]:
  """Writes every plot of one example into `out_dir`; returns the file paths.

  Args:
    out_dir: output folder (created).
    config: the run's config (modalities, model.far_kernel, model.dilations, max_len).
    batch: the example in the batch layout (batch of 1, see `RestoredRun.find`).
    intermediates: the model's intermediates for it (numpy), see FascaNet.__call__.

  Returns:
    '<pair>_sampling.png' per FGFA pair and 'cross_attention_<m>.png' per modality that attended
    to others (none without fusion).
  """
  os.makedirs(out_dir, exist_ok=True)
  lengths = {m: int(batch[f'{m}_mask'][0].sum()) for m in config.modalities}
  written = []
  for key, far in sorted(intermediates.items()):
    if not key.endswith('_far'):
      continue
    pair = key[: -len('_far')]
    path = os.path.join(out_dir, f'{pair}_sampling.png')
    plot_sampling(
      path,
      pair,
      far['offsets'][0, 0],
      far['mask'][0, 0],
      tuple(config.model.far_kernel),
      int(config.model.dilations.get(pair, 1)),
      lengths['text'],
      lengths[pair],
    )
    written.append(path)
  for m, weights in sorted(intermediates.get('cross_attention', {}).items()):
    others = [o for o in config.modalities if o != m]  # TriModalFusion's concatenation order
    path = os.path.join(out_dir, f'cross_attention_{m}.png')
    plot_cross_attention(
      path, m, weights[0], lengths[m], [(o, int(config.max_len[o]), lengths[o]) for o in others]
    )
    written.append(path)
  return written


def write_plots(
  workdir: str, example_id: str, split: str = 'test', config=None, out_dir: str | None = None
) -> list[str]:
  """Restores the run in `workdir`, runs example `example_id` of `split` and plots it.

  Args:
    workdir: training run directory (best checkpoint; config.json unless `config` is given).
    example_id: the example's `id`.
    split: 'train', 'valid' or 'test'.
    config: overrides the run's saved config.
    out_dir: default `workdir/alignment/<id>`.

  Returns:
    The paths written (see `plot_example`).
  """
  run = restored_run.RestoredRun(workdir, config)
  batch = run.find(split, example_id)
  _, intermediates = run.apply(batch)
  out_dir = out_dir or os.path.join(workdir, 'alignment', example_id)
  return plot_example(out_dir, run.config, batch, intermediates)
