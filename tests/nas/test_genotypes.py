"""Tests for skillearn_jax.nas.genotypes: derivation rule, validation, published genotypes, JSON."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import genotypes as G
from skillearn_jax.nas.ops import PRIMITIVES

EDGE_OFFSETS = (0, 2, 5, 9)  # first edge of each of the 4 nodes in a 14-edge cell


def alphas_encoding(cell, primitives=PRIMITIVES, nodes=4):
  """α logits whose DARTS derivation must give `cell`: unused edges favour `none` (which the
  rule must ignore), kept edges favour their op, the first-listed input more strongly."""
  alphas = np.zeros((G.num_edges(nodes), len(primitives)))
  if "none" in primitives:
    alphas[:, primitives.index("none")] = 10.0
  for position, (op_name, state) in enumerate(cell):
    node, slot = divmod(position, 2)
    edge = EDGE_OFFSETS[node] + state
    alphas[edge, primitives.index(op_name)] = 6.0 - slot
  return alphas


@pytest.mark.parametrize("name", ["DARTS_V1", "DARTS_V2", "PDARTS", "PC_DARTS_cifar"])
def test_derivation_recovers_published_cells_ignoring_none(name):
  genotype = G.BUILTIN_GENOTYPES[name]
  derived = G.derive_genotype(alphas_encoding(genotype.normal), alphas_encoding(genotype.reduce))
  assert derived == genotype


def test_derivation_hand_computed_two_node_cell():
  primitives = ("none", "skip_connect", "sep_conv_3x3")
  # Node 0: edges from states 0, 1. Node 1: edges from states 0, 1, 2.
  logits = np.log(
    np.array(
      [
        [0.5, 0.3, 0.2],  # e0 (0->n0): best non-none 0.3 skip
        [0.1, 0.2, 0.7],  # e1 (1->n0): best non-none 0.7 sep
        [0.9, 0.05, 0.05],  # e2 (0->n1): best non-none 0.05; `none` 0.9 must not count
        [0.2, 0.4, 0.4],  # e3 (1->n1): tie 0.4 -> first op (skip)
        [0.3, 0.1, 0.6],  # e4 (2->n1): 0.6 sep
      ]
    )
  )
  genotype = G.derive_genotype(logits, logits, primitives, nodes=2, multiplier=2)
  assert genotype.normal == (
    ("sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("sep_conv_3x3", 2),
    ("skip_connect", 1),
  )
  assert genotype.normal_concat == (2, 3)


def test_derivation_tie_keeps_lower_state_first_and_concat_multiplier():
  genotype = G.derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), multiplier=2)
  # Equal weights: every node keeps states 0 and 1 with the first non-none op.
  assert genotype.normal == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
  assert genotype.normal_concat == (4, 5)


def test_derivation_accepts_jax_arrays_and_op_subsets_without_none():
  subset = ("skip_connect", "sep_conv_3x3", "dil_conv_5x5")
  normal = alphas_encoding(G.DARTS_V1.normal, ("none",) + subset)[:, 1:]
  reduce = np.zeros((14, 3))
  genotype = G.derive_genotype(jnp.asarray(normal), jnp.asarray(reduce), subset)
  # Without `none` the encoding's unused edges are all-zero, so kept edges still win.
  assert genotype.normal == G.DARTS_V1.normal
  assert {op for op, _ in genotype.reduce} == {"skip_connect"}


def test_derivation_per_edge_primitives():
  per_edge = [("none", "sep_conv_3x3")] * 13 + [("none", "dil_conv_5x5")]
  weights = np.tile([0.1, 0.9], (14, 1))
  weights[13] = [0.0, 1.0]  # edge 13 (state 4 -> node 3) is the strongest into node 3
  cell = G.derive_cell(weights, per_edge)
  assert cell[6] == ("dil_conv_5x5", 4)
  assert cell[7] == ("sep_conv_3x3", 0)


def test_derivation_rejects_bad_shapes_and_none_only_edges():
  with pytest.raises(ValueError, match=r"shape \(14, num_ops\)"):
    G.derive_genotype(np.zeros((10, 8)), np.zeros((14, 8)))
  with pytest.raises(ValueError, match="edge 0 has 8 weights but 3 primitives"):
    G.derive_cell(np.zeros((14, 8)), ("none", "skip_connect", "sep_conv_3x3"))
  with pytest.raises(ValueError, match="per-edge primitives lists 2 edges; expected 14"):
    G.derive_cell(np.zeros((14, 2)), [("none", "skip_connect")] * 2)
  with pytest.raises(ValueError, match="no op other than 'none'"):
    G.derive_cell(np.zeros((2, 1)), ("none",), nodes=1)
  with pytest.raises(ValueError, match="multiplier"):
    G.derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), multiplier=5)


def test_builtin_genotypes_are_valid_four_node_cells_and_alias():
  assert set(G.BUILTIN_GENOTYPES) == {
    "DARTS_V1",
    "DARTS_V2",
    "DARTS",
    "PDARTS",
    "PC_DARTS_cifar",
    "PC_DARTS_image",
  }
  assert G.BUILTIN_GENOTYPES["DARTS"] is G.DARTS_V2
  for genotype in G.BUILTIN_GENOTYPES.values():
    G.validate_genotype(genotype, nodes=4)
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)


def test_genotype_reads_like_the_official_namedtuple():
  genotype = G.Genotype(
    normal=[("skip_connect", 0), ("sep_conv_3x3", 1)],
    normal_concat=range(2, 3),
    reduce=[["max_pool_3x3", 0], ["max_pool_3x3", 1]],
    reduce_concat=[2],
  )
  normal, normal_concat, reduce, reduce_concat = genotype
  assert normal == (("skip_connect", 0), ("sep_conv_3x3", 1))
  assert normal_concat == (2,) and reduce_concat == (2,)
  assert reduce[1] == ("max_pool_3x3", 1)
  assert hash(genotype) == hash(G.Genotype(*genotype))
  assert genotype.cell("reduce") == (reduce, reduce_concat)
  with pytest.raises(ValueError, match="cell_type must be one of"):
    genotype.cell("normal_concat")


def replace_cell(genotype, **fields):
  return G.Genotype(**{**genotype._asdict(), **fields})


@pytest.mark.parametrize(
  "fields, message",
  [
    (dict(normal=G.DARTS_V2.normal[:7]), r"normal cell has 7 \(op, input\) pairs"),
    (dict(reduce=()), r"reduce cell has 0 \(op, input\) pairs"),
    (
      dict(normal=(("conv_7x1_1x7", 0),) + G.DARTS_V2.normal[1:]),
      r"normal cell node 0: unknown op 'conv_7x1_1x7'; allowed ops are \('none', 'max_pool",
    ),
    (
      dict(reduce=G.DARTS_V2.reduce[:2] + (("skip_connect", 3),) + G.DARTS_V2.reduce[3:]),
      r"reduce cell node 1 is wired to state 3, which does not exist before it: node 1 can "
      r"read states 0..2",
    ),
    (
      dict(normal=(("skip_connect", -1),) + G.DARTS_V2.normal[1:]),
      "normal cell node 0 is wired to state -1",
    ),
    (dict(normal_concat=(2, 3, 4, 6)), r"normal_concat index 6 is out of range.*states 0..5"),
    (dict(reduce_concat=()), "reduce_concat is empty"),
  ],
)
def test_validation_names_the_problem(fields, message):
  with pytest.raises(ValueError, match=message):
    G.validate_genotype(replace_cell(G.DARTS_V2, **fields))


def test_validation_node_count_and_custom_primitives():
  with pytest.raises(ValueError, match="normal cell has 4 intermediate nodes.*expected 5"):
    G.validate_genotype(G.DARTS_V2, nodes=5)
  with pytest.raises(ValueError, match="unknown op 'sep_conv_3x3'"):
    G.validate_genotype(G.DARTS_V2, primitives=("skip_connect", "max_pool_3x3"))


@pytest.mark.parametrize("name", sorted(G.BUILTIN_GENOTYPES))
def test_json_round_trip(tmp_path, name):
  path = tmp_path / "sub" / "genotype.json"
  G.save_genotype(G.BUILTIN_GENOTYPES[name], path)
  assert G.load_genotype(path) == G.BUILTIN_GENOTYPES[name]
  assert os.listdir(path.parent) == ["genotype.json"]  # no temp file left behind
  data = json.loads(path.read_text())
  assert data["normal_concat"] == [2, 3, 4, 5]
  assert data["normal"][0] == list(G.BUILTIN_GENOTYPES[name].normal[0])


def test_save_overwrites_atomically(tmp_path):
  path = tmp_path / "genotype.json"
  G.save_genotype(G.DARTS_V1, path)
  G.save_genotype(G.PDARTS, path)
  assert G.load_genotype(path) == G.PDARTS
  assert os.listdir(tmp_path) == ["genotype.json"]


def write_json(tmp_path, data):
  path = tmp_path / "g.json"
  path.write_text(data if isinstance(data, str) else json.dumps(data))
  return path


def darts_v2_dict(**changes):
  return {**G.genotype_to_dict(G.DARTS_V2), **changes}


@pytest.mark.parametrize(
  "data, message",
  [
    ("{not json", "is not valid JSON"),
    ([1, 2], "expected a JSON object"),
    (
      {k: v for k, v in darts_v2_dict().items() if k != "reduce_concat"},
      r"missing field\(s\) \['reduce_concat'\]",
    ),
    (darts_v2_dict(extra=1), r"unknown field\(s\) \['extra'\]"),
    (darts_v2_dict(normal="sep_conv_3x3"), "field 'normal' must be a list"),
    (
      darts_v2_dict(reduce=[["max_pool_3x3", 0], ["max_pool_3x3"]]),
      r"field 'reduce' entry 1 must be \[op_name, input_index\]",
    ),
    (darts_v2_dict(normal=[["skip_connect", "0"]] * 8), r"field 'normal' entry 0"),
    (darts_v2_dict(normal_concat=[2, "3"]), "field 'normal_concat' must be a list of state"),
    (darts_v2_dict(normal=[["sep_conv_3x3", 0], ["bogus_op", 1]] * 4), "unknown op 'bogus_op'"),
    (darts_v2_dict(reduce_concat=[2, 3, 4, 9]), "reduce_concat index 9 is out of range"),
  ],
)
def test_load_rejects_malformed_files(tmp_path, data, message):
  path = write_json(tmp_path, data)
  with pytest.raises(ValueError, match=message) as error:
    G.load_genotype(path)
  assert str(path) in str(error.value)


def test_resolve_genotype(tmp_path):
  assert G.resolve_genotype("DARTS") == G.DARTS_V2
  assert G.resolve_genotype("PC_DARTS_image") == G.PC_DARTS_image
  path = tmp_path / "g.json"
  G.save_genotype(G.PDARTS, path)
  assert G.resolve_genotype(str(path)) == G.PDARTS
  assert G.resolve_genotype(path) == G.PDARTS
  assert G.resolve_genotype(G.DARTS_V1) is G.DARTS_V1
  with pytest.raises(
    ValueError,
    match=r"unknown genotype 'DARTS_V3'.*DARTS_V1, DARTS_V2, DARTS, "
    r"PDARTS, PC_DARTS_cifar, PC_DARTS_image",
  ):
    G.resolve_genotype("DARTS_V3")
  with pytest.raises(ValueError, match="not an existing JSON file"):
    G.resolve_genotype(str(tmp_path / "missing.json"))
