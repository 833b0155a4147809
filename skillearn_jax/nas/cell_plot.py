"""Pictures of DARTS cells and of architecture weights, written as PNG files.

This module owns the drawings a search run leaves behind: a genotype cell as a graph (inputs
c_{k-2}, c_{k-1}, intermediate nodes 0..n-1, output c_{k}, edges labelled with their op), drawn
with matplotlib by default or with graphviz when its Python package and `dot` are installed,
and heatmaps of softmax(α) (edges × ops) for a sequence of snapshots taken during search, on a
diverging scale centred on the uniform weight 1/|ops|. It
uses matplotlib's object API (no pyplot), so it is safe off-screen and in threads.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from skillearn_jax.nas.genotypes import (
  NONE_OP,
  NUM_INPUT_STATES,
  Genotype,
  num_edges,
  validate_genotype,
)
from skillearn_jax.nas.ops import PRIMITIVES

BACKENDS = ("matplotlib", "graphviz", "auto")
OP_COLORS = {
  "none": "#9e9e9e",
  "max_pool_3x3": "#1f77b4",
  "avg_pool_3x3": "#17becf",
  "skip_connect": "#7f7f7f",
  "sep_conv_3x3": "#d62728",
  "sep_conv_5x5": "#ff7f0e",
  "dil_conv_3x3": "#2ca02c",
  "dil_conv_5x5": "#9467bd",
}
OTHER_OP_COLOR = "#8c564b"
INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR = "#c1f0c1", "#add8e6", "#eee8aa"
COLUMN_GAP, ROW_GAP, NODE_RADIUS = 3.0, 1.8, 0.36  # data units; the figure is 1.1 inch/unit
LABEL_AT = 0.68  # fraction of an edge's length where its op label sits


def state_name(state: int, tex: bool = False) -> str:
  """c_{k-2}, c_{k-1} for the cell inputs, the node number for intermediate states."""
  if state >= NUM_INPUT_STATES:
    return str(state - NUM_INPUT_STATES)
  name = ("c_{k-2}", "c_{k-1}")[state]
  return f"${name}$" if tex else name


def edge_labels(nodes: int = 4) -> list[str]:
  """Names of the searched cell's edges in α row order: 'c_{k-2} → 0', ..., '2 → 3'."""
  return [
    f"{state_name(state)} → {node}"
    for node in range(nodes)
    for state in range(NUM_INPUT_STATES + node)
  ]


# ---------------------------------------------------------------------------------------------
# Genotype cells


def _cell(genotype: Genotype, cell_type: str):
  validate_genotype(genotype, primitives=_ops_in(genotype))
  edges, concat = genotype.cell(cell_type)
  return edges, concat, len(edges) // 2


def _ops_in(genotype: Genotype) -> tuple[str, ...]:
  # Plots draw any op name; validation here only checks the wiring.
  return tuple({op for op, _ in genotype.normal + genotype.reduce})


def _layer_positions(edges, nodes: int) -> dict[int, tuple[float, float]]:
  """Graph layout: states in columns by longest path from the inputs; within a column,
  ordered by the mean height of their inputs (fewer crossings) and centred vertically."""
  inputs = {
    NUM_INPUT_STATES + node: [state for _, state in edges[2 * node : 2 * node + 2]]
    for node in range(nodes)
  }
  output = NUM_INPUT_STATES + nodes
  inputs[output] = list(range(NUM_INPUT_STATES + nodes))
  depth = {state: 0 for state in range(NUM_INPUT_STATES)}
  for state in sorted(inputs):
    depth[state] = 1 + max(depth[source] for source in inputs[state])
  depth[output] = 1 + max(depth[state] for state in range(output))
  positions = {}
  for column in range(max(depth.values()) + 1):
    states = [state for state in depth if depth[state] == column]
    if column:
      states.sort(key=lambda state: -np.mean([positions[s][1] for s in inputs[state]]))
    for row, state in enumerate(states):
      positions[state] = (COLUMN_GAP * column, ROW_GAP * ((len(states) - 1) / 2 - row))
  return positions


def _bend(source_xy, target_xy, columns_spanned: float) -> float:
  """arc3 curvature: straight between neighbouring columns, else bowed away from the
  centre line so the edge passes around the columns it skips."""
  if columns_spanned <= 1.0:
    return 0.0
  # arc3 puts its control point at mid + rad·(dy, -dx): rad < 0 bows a rightward edge up.
  return -0.25 if (source_xy[1] + target_xy[1]) >= 0 else 0.25


def _bezier_point(start, end, rad: float, t: float) -> tuple[float, float]:
  """Point at parameter t on matplotlib's arc3 quadratic Bézier (equal aspect assumed)."""
  (x0, y0), (x1, y1) = start, end
  cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
  return (
    (1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t**2 * x1,
    (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t**2 * y1,
  )


def _draw_cell(genotype: Genotype, cell_type: str, path: str, title: str | None) -> None:
  edges, concat, nodes = _cell(genotype, cell_type)
  positions = _layer_positions(edges, nodes)
  output = NUM_INPUT_STATES + nodes
  xs = [x for x, _ in positions.values()]
  ys = [y for _, y in positions.values()]
  figure = Figure(
    figsize=(1.1 * (max(xs) - min(xs) + 2.4), 1.1 * (max(ys) - min(ys) + 2.0)), dpi=120
  )
  axes = figure.add_subplot()
  axes.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
  axes.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
  axes.set_aspect("equal")  # keeps arc3 (computed in display space) equal to _bezier_point
  axes.axis("off")

  circles = {}
  for state, xy in positions.items():
    if state < NUM_INPUT_STATES:
      label, color = state_name(state, tex=True), INPUT_COLOR
    elif state == output:
      label, color = "$c_{k}$", OUTPUT_COLOR
    else:
      label, color = state_name(state), NODE_COLOR
    circles[state] = Circle(xy, NODE_RADIUS, facecolor=color, edgecolor="black", zorder=4)
    axes.add_patch(circles[state])
    axes.text(*xy, label, fontsize=12, ha="center", va="center", zorder=5)

  def arrow(source, target, color, style, rad):
    axes.add_patch(
      FancyArrowPatch(
        positions[source],
        positions[target],
        connectionstyle=f"arc3,rad={rad}",
        arrowstyle="-|>",
        mutation_scale=14,
        color=color,
        linestyle=style,
        linewidth=1.6,
        patchA=circles[source],
        patchB=circles[target],
        shrinkA=1,
        shrinkB=1,
        zorder=1,
      )
    )

  def columns_between(source, target):
    return abs(positions[target][0] - positions[source][0]) / COLUMN_GAP

  for position, (op_name, source) in enumerate(edges):
    target = NUM_INPUT_STATES + position // 2
    rad = _bend(positions[source], positions[target], columns_between(source, target))
    partner = edges[position ^ 1][1]
    if partner == source:  # both inputs from one state: bow them apart
      rad = 0.2 if position % 2 else -0.2
    color = OP_COLORS.get(op_name, OTHER_OP_COLOR)
    arrow(source, target, color, "-", rad)
    # Labels sit near the target: edges that cross do so mid-way, and a label near its
    # node reads as "this op feeds that node".
    x, y = _bezier_point(positions[source], positions[target], rad, LABEL_AT)
    axes.text(
      x,
      y,
      op_name,
      fontsize=8,
      ha="center",
      va="center",
      color=color,
      zorder=3,
      bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor=color, linewidth=0.8),
    )
  for state in concat:
    rad = _bend(positions[state], positions[output], columns_between(state, output))
    arrow(state, output, "#555555", "--", rad)
  axes.set_title(title or f"{cell_type} cell", fontsize=12)
  figure.savefig(path, bbox_inches="tight")


def cell_dot_source(genotype: Genotype, cell_type: str, title: str | None = None) -> str:
  """The cell as Graphviz DOT text (left to right, edges labelled with op names)."""
  edges, concat, nodes = _cell(genotype, cell_type)
  output = NUM_INPUT_STATES + nodes
  graph_label = (title or f"{cell_type} cell").replace('"', "'")  # DOT string quoting

  def node_id(state):
    return "c_k" if state == output else f"s{state}"

  lines = [
    "digraph cell {",
    "  rankdir=LR;",
    f'  label="{graph_label}"; labelloc=t;',
    '  node [style="rounded,filled", shape=rect, fontname=helvetica, penwidth=2];',
    '  edge [fontname=helvetica, fontsize=16];',
  ]
  for state in range(NUM_INPUT_STATES):
    lines.append(f'  {node_id(state)} [label="{state_name(state)}", fillcolor="{INPUT_COLOR}"];')
  for node in range(nodes):
    lines.append(
      f'  {node_id(NUM_INPUT_STATES + node)} [label="{node}", shape=box, fillcolor="{NODE_COLOR}"];'
    )
  lines.append(f'  c_k [label="c_{{k}}", fillcolor="{OUTPUT_COLOR}"];')
  lines.append("  {rank=same; s0; s1;}")
  for position, (op_name, source) in enumerate(edges):
    target = NUM_INPUT_STATES + position // 2
    color = OP_COLORS.get(op_name, OTHER_OP_COLOR)
    lines.append(
      f'  {node_id(source)} -> {node_id(target)} '
      f'[label="{op_name}", color="{color}", fontcolor="{color}"];'
    )
  for state in concat:
    lines.append(f'  {node_id(state)} -> c_k [color=gray];')
  lines.append("}")
  return "\n".join(lines) + "\n"


def graphviz_available() -> bool:
  """True when the `graphviz` Python package and the `dot` binary are both installed."""
  try:
    import graphviz  # noqa: F401  (only whether it imports)
  except ImportError:
    return False
  return shutil.which("dot") is not None


def _render_graphviz(source: str, path: str) -> None:
  import graphviz  # pylint: disable=import-outside-toplevel

  png = graphviz.Source(source).pipe(format="png")
  with open(path, "wb") as f:
    f.write(png)


def plot_cell(
  genotype: Genotype,
  cell_type: str,
  path: str | os.PathLike,
  *,
  backend: str = "matplotlib",
  title: str | None = None,
) -> str:
  """Draws the 'normal' or 'reduce' cell of `genotype` to the PNG `path`; returns the path.

  backend: 'matplotlib' (default, always available), 'graphviz' (needs the `graphviz`
  package and `dot`), or 'auto' (graphviz when available, else matplotlib).
  """
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  use_graphviz = backend == "graphviz" or (backend == "auto" and graphviz_available())
  if use_graphviz:
    if not graphviz_available():
      raise RuntimeError(
        "backend='graphviz' needs the `graphviz` Python package and the "
        "`dot` binary; install both or use backend='matplotlib'"
      )
    _render_graphviz(cell_dot_source(genotype, cell_type, title), path)
  else:
    _draw_cell(genotype, cell_type, path, title)
  return path


def plot_genotype(
  genotype: Genotype, directory: str | os.PathLike, *, prefix: str = "", backend: str = "matplotlib"
) -> dict[str, str]:
  """Draws both cells to `directory`/{prefix}normal.png and {prefix}reduce.png."""
  return {
    cell_type: plot_cell(
      genotype, cell_type, os.path.join(directory, f"{prefix}{cell_type}.png"), backend=backend
    )
    for cell_type in ("normal", "reduce")
  }


# ---------------------------------------------------------------------------------------------
# α heatmaps over time


def heatmap_snapshot_indices(count: int, max_panels: int) -> list[int]:
  """Evenly spaced snapshot indices, always the first and the last."""
  if count <= max_panels:
    return list(range(count))
  return sorted(set(np.linspace(0, count - 1, max_panels).round().astype(int).tolist()))


def _panel_title(steps: Sequence[Any] | None, index: int) -> str:
  if steps is None:
    return f"snapshot {index}"
  label = steps[index]
  return label if isinstance(label, str) else f"step {label}"


def uniform_centred_norm(weights: Sequence[np.ndarray], ops: int) -> CenteredNorm:
  """The colour scale of the heatmaps: centred on the uniform weight 1/|ops|, as wide as the
  largest departure from it (a tiny width when there is none), so a search that has barely
  moved from uniform still shows which ops gain and which lose."""
  centre = 1.0 / ops
  spread = max(float(np.max(np.abs(w - centre))) for w in weights)
  return CenteredNorm(vcenter=centre, halfrange=max(spread, 1e-6))


def alpha_heatmap_figure(
  snapshots: Sequence[Any],
  *,
  primitives: Sequence[str] = PRIMITIVES,
  steps: Sequence[Any] | None = None,
  title: str = "softmax(α)",
  apply_softmax: bool = True,
  max_panels: int = 6,
) -> Figure:
  """The figure `plot_alpha_heatmaps` writes (see there)."""
  if not snapshots:
    raise ValueError("snapshots is empty; pass at least one α array")
  if max_panels < 1:
    raise ValueError(f"max_panels must be >= 1, got {max_panels}")
  if steps is not None and len(steps) != len(snapshots):
    raise ValueError(f"steps has {len(steps)} labels for {len(snapshots)} snapshots")
  primitives = tuple(primitives)
  shown = heatmap_snapshot_indices(len(snapshots), max_panels)
  weights = []
  for index in shown:
    snapshot = jnp.asarray(snapshots[index], dtype=jnp.float32)
    if apply_softmax:
      snapshot = jax.nn.softmax(snapshot, axis=-1)
    weights.append(np.asarray(snapshot))
  edges, ops = weights[0].shape
  nodes = next((n for n in range(1, edges + 1) if num_edges(n) == edges), None)
  for index, w in zip(shown, weights):
    if w.ndim != 2 or w.shape[1] != len(primitives) or nodes is None or w.shape[0] != edges:
      raise ValueError(
        f"snapshot {index} has shape {w.shape}; expected (num_edges, "
        f"{len(primitives)}) with num_edges one of 2, 5, 9, 14, ... and the "
        f"same for every snapshot"
      )
  columns = min(3, len(shown))
  rows = -(-len(shown) // columns)
  figure = Figure(
    figsize=(1.6 + 3.4 * columns, 1.2 + (0.6 + 0.27 * edges) * rows), dpi=110, layout="constrained"
  )
  grid = figure.subplots(rows, columns, squeeze=False)
  # A diverging map centred on uniform: red above 1/|ops|, blue below, white at uniform.
  norm = uniform_centred_norm(weights, ops)
  image = None
  labels = edge_labels(nodes)
  candidates = [k for k, op in enumerate(primitives) if op != NONE_OP]
  for panel, (index, w) in enumerate(zip(shown, weights)):
    axes = grid[panel // columns][panel % columns]
    image = axes.imshow(w, cmap="RdBu_r", norm=norm, aspect="auto")
    if candidates:
      best = np.asarray(candidates)[np.argmax(w[:, candidates], axis=1)]
      axes.scatter(best, np.arange(edges), s=10, c="white", edgecolors="black", linewidths=0.5)
    axes.set_title(_panel_title(steps, index), fontsize=10)
    axes.set_xticks(range(ops), primitives, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(edges), labels if panel % columns == 0 else [""] * edges, fontsize=7)
  for panel in range(len(shown), rows * columns):
    grid[panel // columns][panel % columns].axis("off")
  bar = figure.colorbar(image, ax=grid, shrink=0.8, extend="neither")
  bar.set_label(f"weight (white = uniform 1/{ops} = {1 / ops:.3g})", fontsize=8)
  bar.ax.tick_params(labelsize=7)
  figure.suptitle(
    f"{title}: departure from uniform 1/{ops}\n"
    f"red above, blue below (up to ±{norm.halfrange:.2g}); dot: each edge's strongest op other than none",
    fontsize=10,
  )
  return figure


def plot_alpha_heatmaps(
  snapshots: Sequence[Any],
  path: str | os.PathLike,
  *,
  primitives: Sequence[str] = PRIMITIVES,
  steps: Sequence[Any] | None = None,
  title: str = "softmax(α)",
  apply_softmax: bool = True,
  max_panels: int = 6,
) -> str:
  """One edges × ops heatmap per α snapshot (at most `max_panels`, evenly spaced, first and
  last always shown) on one diverging colour scale centred on the uniform weight 1/|ops|
  (`uniform_centred_norm`), so departures from uniform show however small; the strongest
  non-`none` op of every edge is dotted. `snapshots` are α logits of shape
  (num_edges(nodes), len(primitives)) (or weights with apply_softmax=False); `steps` label the
  panels: strings as given ('epoch 3'), numbers as 'step N'."""
  figure = alpha_heatmap_figure(
    snapshots,
    primitives=primitives,
    steps=steps,
    title=title,
    apply_softmax=apply_softmax,
    max_panels=max_panels,
  )
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path)
  return path
