"""Tests for skillearn_jax.nas.cell_plot: cell drawings and α heatmaps are real, readable PNGs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from skillearn_jax.nas import cell_plot  # pylint: disable=wrong-import-position
from skillearn_jax.nas import genotypes as G  # pylint: disable=wrong-import-position
from skillearn_jax.nas.ops import PRIMITIVES  # pylint: disable=wrong-import-position

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path, min_bytes=10_000, min_width=400):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  pixels = matplotlib.image.imread(path)
  height, width = pixels.shape[:2]
  assert width >= min_width and height >= 200
  assert path.stat().st_size >= min_bytes
  # Drawn content, not a blank canvas: many distinct colours.
  assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]).round(2), axis=0)) > 20


@pytest.mark.parametrize("name, cell_type", [("DARTS_V2", "normal"), ("PDARTS", "reduce")])
def test_plot_cell_writes_png(tmp_path, name, cell_type):
  path = tmp_path / "plots" / f"{name}_{cell_type}.png"
  assert cell_plot.plot_cell(G.BUILTIN_GENOTYPES[name], cell_type, path) == str(path)
  assert_real_png(path)


def test_plot_genotype_writes_both_cells_and_handles_shared_inputs(tmp_path):
  # Both inputs of node 0 from the same state, and a 2-node cell.
  genotype = G.Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 1), ("max_pool_3x3", 0), ("dil_conv_5x5", 2)],
    normal_concat=[2, 3],
    reduce=[("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("skip_connect", 2), ("sep_conv_5x5", 0)],
    reduce_concat=[2, 3],
  )
  paths = cell_plot.plot_genotype(genotype, tmp_path, prefix="tiny_")
  assert paths == {
    "normal": str(tmp_path / "tiny_normal.png"),
    "reduce": str(tmp_path / "tiny_reduce.png"),
  }
  for path in paths.values():
    assert_real_png(tmp_path / path, min_bytes=5_000, min_width=300)


def test_plot_cell_rejects_bad_input(tmp_path):
  with pytest.raises(ValueError, match="backend must be one of"):
    cell_plot.plot_cell(G.DARTS_V2, "normal", tmp_path / "x.png", backend="svg")
  with pytest.raises(ValueError, match="cell_type must be one of"):
    cell_plot.plot_cell(G.DARTS_V2, "reduction", tmp_path / "x.png")
  broken = G.DARTS_V2._replace(
    normal=G.DARTS_V2.normal[:2] + (("skip_connect", 4),) + G.DARTS_V2.normal[3:]
  )
  with pytest.raises(ValueError, match="normal cell node 1 is wired to state 4"):
    cell_plot.plot_cell(broken, "normal", tmp_path / "x.png")
  assert not (tmp_path / "x.png").exists()


def test_graphviz_backend_needs_graphviz(tmp_path, monkeypatch):
  monkeypatch.setattr(cell_plot, "graphviz_available", lambda: False)
  with pytest.raises(RuntimeError, match="needs the `graphviz` Python package"):
    cell_plot.plot_cell(G.DARTS_V2, "normal", tmp_path / "x.png", backend="graphviz")
  # 'auto' falls back to matplotlib.
  cell_plot.plot_cell(G.DARTS_V2, "normal", tmp_path / "auto.png", backend="auto")
  assert_real_png(tmp_path / "auto.png")


def test_cell_dot_source_has_every_edge():
  source = cell_plot.cell_dot_source(G.DARTS_V2, "reduce", title='my "cell"')
  assert source.startswith("digraph cell {") and source.rstrip().endswith("}")
  assert "label=\"my 'cell'\"" in source
  assert 's0 -> s2 [label="max_pool_3x3"' in source
  assert 's2 -> s5 [label="skip_connect"' in source  # node 3 reads node 0
  assert source.count("-> c_k") == 4
  assert source.count("[label=\"") == 8 + 2 + 4 + 1  # edges, inputs, nodes, output


def test_edge_labels_follow_alpha_row_order():
  labels = cell_plot.edge_labels(4)
  assert len(labels) == 14
  assert labels[:2] == ["c_{k-2} → 0", "c_{k-1} → 0"]
  assert labels[5] == "c_{k-2} → 2" and labels[13] == "2 → 3"


def test_heatmap_snapshot_indices():
  assert cell_plot.heatmap_snapshot_indices(3, 6) == [0, 1, 2]
  assert cell_plot.heatmap_snapshot_indices(50, 6) == [0, 10, 20, 29, 39, 49]
  assert cell_plot.heatmap_snapshot_indices(50, 1) == [0]


def test_plot_alpha_heatmaps_writes_png(tmp_path):
  rng = np.random.default_rng(0)
  snapshots = [rng.normal(size=(14, 8)) * t for t in range(20)]
  path = cell_plot.plot_alpha_heatmaps(
    snapshots, tmp_path / "alphas.png", steps=[f"epoch {e}" for e in range(20)], title="normal"
  )
  assert_real_png(tmp_path / "alphas.png", min_width=800)
  assert path == str(tmp_path / "alphas.png")


def test_plot_alpha_heatmaps_op_subset_and_weights(tmp_path):
  subset = ("skip_connect", "sep_conv_3x3", "max_pool_3x3")
  weights = np.full((5, 3), 1 / 3)  # a 2-node cell, already normalised
  cell_plot.plot_alpha_heatmaps(
    [weights], tmp_path / "w.png", primitives=subset, apply_softmax=False
  )
  assert_real_png(tmp_path / "w.png", min_bytes=5_000, min_width=200)


@pytest.mark.parametrize("ops", [8, 3])
def test_alpha_heatmaps_are_centred_on_the_uniform_weight(ops):
  rng = np.random.default_rng(0)
  primitives = PRIMITIVES[:ops]
  # nearly uniform, as after a short search: every weight within 0.01 of 1/ops
  snapshots = [0.03 * rng.normal(size=(5, ops)) for _ in range(3)]
  figure = cell_plot.alpha_heatmap_figure(snapshots, primitives=primitives)
  images = [image for axes in figure.axes for image in axes.images]
  assert len(images) == 3
  weights = [np.asarray(jax.nn.softmax(jnp.asarray(s, jnp.float32), -1)) for s in snapshots]
  spread = max(np.max(np.abs(w - 1 / ops)) for w in weights)
  for image in images:
    norm = image.norm
    assert norm.vcenter == pytest.approx(1 / ops)
    assert norm.halfrange == pytest.approx(spread, rel=1e-5)
    assert image.get_cmap().name == "RdBu_r"  # diverging: white at the centre
    assert float(norm(1 / ops)) == pytest.approx(0.5)
    # the largest departure reaches the end of the colour range, not a sliver of 0..max
    reach = max(max(float(norm(w.max())) - 0.5, 0.5 - float(norm(w.min()))) for w in weights)
    assert reach == pytest.approx(0.5, rel=1e-4)
  assert f"uniform 1/{ops}" in figure.get_suptitle()


def test_plot_alpha_heatmaps_rejects_bad_input(tmp_path):
  path = tmp_path / "bad.png"
  with pytest.raises(ValueError, match="snapshots is empty"):
    cell_plot.plot_alpha_heatmaps([], path)
  with pytest.raises(ValueError, match="steps has 1 labels for 2 snapshots"):
    cell_plot.plot_alpha_heatmaps([np.zeros((14, 8))] * 2, path, steps=[0])
  with pytest.raises(ValueError, match=r"snapshot 0 has shape \(14, 7\)"):
    cell_plot.plot_alpha_heatmaps([np.zeros((14, 7))], path)
  with pytest.raises(ValueError, match=r"snapshot 0 has shape \(13, 8\)"):
    cell_plot.plot_alpha_heatmaps([np.zeros((13, 8))], path)
  with pytest.raises(ValueError, match=r"snapshot 1 has shape \(5, 8\)"):
    cell_plot.plot_alpha_heatmaps([np.zeros((14, 8)), np.zeros((5, 8))], path)
  with pytest.raises(ValueError, match="max_panels must be >= 1"):
    cell_plot.plot_alpha_heatmaps([np.zeros((14, 8))], path, max_panels=0)
  assert not path.exists()
