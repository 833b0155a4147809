"""What Learning by Passing Tests shows: the created tests' selection weights, as pictures.

This module owns LPT's plots and the summaries they draw from: the histogram of the monitored
bank examples' selection weights f(d) (`selection_histogram`, kept per epoch in the run's
history), its evolution over epochs (`plot_selection_over_time`), and the most and least
selected examples as an image grid (`extremes`, `plot_selection_extremes`).
"""

from __future__ import annotations

from matplotlib.figure import Figure
import numpy as np

HISTOGRAM_BINS = 20


def selection_histogram(selection) -> list[int]:
  counts, _ = np.histogram(selection, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
  return counts.tolist()


def plot_selection_over_time(histograms, epochs, path: str) -> None:
  """The distribution of the current test's selection weights per epoch."""
  counts = np.asarray(histograms, np.float64).T
  counts /= np.maximum(counts.sum(axis=0, keepdims=True), 1.0)
  fig = Figure(figsize=(1.5 + 0.4 * max(len(epochs), 4), 4))
  ax = fig.add_subplot()
  image = ax.imshow(
    counts,
    origin='lower',
    aspect='auto',
    cmap='viridis',
    extent=(-0.5, len(epochs) - 0.5, 0.0, 1.0),
  )
  ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
  ax.set_xlabel('epoch')
  ax.set_ylabel('selection weight f(d)')
  ax.set_title('selection weights of the created test')
  fig.colorbar(image, ax=ax, label='fraction of monitored bank examples')
  fig.savefig(path, dpi=100, bbox_inches='tight')


def extremes(selection, count: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions of the `count` most and the `count` least selected examples."""
  order = np.argsort(selection, kind='stable')
  count = min(count, len(order))
  return order[::-1][:count], order[:count]


def plot_selection_extremes(rows, path: str) -> None:
  """One row per (title, unit-float images, labels, selection weights)."""
  count = max(len(r[1]) for r in rows)
  fig = Figure(figsize=(1.3 * count, 1.6 * len(rows)))
  axes = fig.subplots(len(rows), count, squeeze=False)
  for r, (title, images, labels, selection) in enumerate(rows):
    for c, ax in enumerate(axes[r]):
      ax.set_xticks([])
      ax.set_yticks([])
      if c >= len(images):
        continue
      gray = images[c].shape[-1] == 1
      ax.imshow(
        images[c][..., 0] if gray else images[c], cmap='gray' if gray else None, vmin=0, vmax=1
      )
      ax.set_title(f'f={selection[c]:.2f} y={labels[c]}', fontsize=7)
    axes[r][0].set_ylabel(title, fontsize=8)
  fig.savefig(path, dpi=100, bbox_inches='tight')
