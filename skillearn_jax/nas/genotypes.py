"""Discrete DARTS architectures: the Genotype type, its derivation from α, and its files.

This module owns what a searched cell *is* once the continuous relaxation is discretised:
the `Genotype` record (same fields and layout as the official DARTS namedtuple, so published
genotypes read the same), the DARTS derivation rule that turns per-edge op weights into a
genotype, validation with errors that say what is wrong and where, the published genotypes
by name, and the JSON file format (atomic writes) used to hand genotypes from search runs to
evaluation runs.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skillearn_jax.nas.ops import PRIMITIVES

NONE_OP = "none"
CELL_TYPES = ("normal", "reduce")
GENOTYPE_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
INPUTS_PER_NODE = 2
NUM_INPUT_STATES = 2  # c_{k-2} and c_{k-1}


def _as_edges(edges: Iterable[Any]) -> tuple[tuple[str, int], ...]:
  return tuple((str(op), int(index)) for op, index in edges)


class Genotype(collections.namedtuple("Genotype", GENOTYPE_FIELDS)):
  """A discrete cell pair: `normal`/`reduce` list (op_name, input_state) pairs, two per node.

  Input state 0 is c_{k-2}, 1 is c_{k-1}, and 2 + i is intermediate node i. The concat fields
  list the states concatenated into the cell output. Lists and ranges are accepted (as in the
  published genotype files) and stored as tuples, so a Genotype is hashable and can be a
  static field of a Flax module.
  """

  __slots__ = ()

  def __new__(cls, normal, normal_concat, reduce, reduce_concat):
    return super().__new__(
      cls,
      _as_edges(normal),
      tuple(int(i) for i in normal_concat),
      _as_edges(reduce),
      tuple(int(i) for i in reduce_concat),
    )

  def cell(self, cell_type: str) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
    """(edges, concat) of the 'normal' or 'reduce' cell."""
    if cell_type not in CELL_TYPES:
      raise ValueError(f"cell_type must be one of {CELL_TYPES}, got {cell_type!r}")
    return getattr(self, cell_type), getattr(self, f"{cell_type}_concat")


def num_edges(nodes: int) -> int:
  """Edges of a searched cell with `nodes` intermediate nodes: node i sees 2 + i states."""
  return sum(NUM_INPUT_STATES + i for i in range(nodes))


# ---------------------------------------------------------------------------------------------
# Validation


def _check_concat(cell_type: str, concat: Sequence[int], num_states: int) -> None:
  if not concat:
    raise ValueError(f"{cell_type}_concat is empty; it must list at least one state to concat")
  for index in concat:
    if not 0 <= index < num_states:
      raise ValueError(
        f"{cell_type}_concat index {index} is out of range: the {cell_type} cell has "
        f"states 0..{num_states - 1} (2 inputs + {num_states - 2} nodes)"
      )


def validate_genotype(
  genotype: Genotype, primitives: Sequence[str] = PRIMITIVES, nodes: int | None = None
) -> Genotype:
  """Returns `genotype` if it is well formed, else raises a ValueError saying what is wrong.

  Checks, per cell: 2 inputs per intermediate node (and `nodes` nodes when given), every op
  name in `primitives`, every input an existing earlier state, concat indices in range.
  """
  allowed = tuple(primitives)
  for cell_type in CELL_TYPES:
    edges, concat = genotype.cell(cell_type)
    if not edges or len(edges) % INPUTS_PER_NODE:
      raise ValueError(
        f"{cell_type} cell has {len(edges)} (op, input) pairs; every intermediate node "
        f"takes exactly {INPUTS_PER_NODE} inputs, so the count must be a positive even "
        f"number"
      )
    cell_nodes = len(edges) // INPUTS_PER_NODE
    if nodes is not None and cell_nodes != nodes:
      raise ValueError(
        f"{cell_type} cell has {cell_nodes} intermediate nodes "
        f"({len(edges)} pairs); expected {nodes}"
      )
    for position, (op_name, index) in enumerate(edges):
      node = position // INPUTS_PER_NODE
      if op_name not in allowed:
        raise ValueError(
          f"{cell_type} cell node {node}: unknown op {op_name!r}; allowed ops are {allowed}"
        )
      num_available = NUM_INPUT_STATES + node
      if not 0 <= index < num_available:
        raise ValueError(
          f"{cell_type} cell node {node} is wired to state {index}, which does not "
          f"exist before it: node {node} can read states 0..{num_available - 1}"
        )
    _check_concat(cell_type, concat, NUM_INPUT_STATES + cell_nodes)
  return genotype


# ---------------------------------------------------------------------------------------------
# Derivation from architecture weights


def _per_edge_primitives(
  primitives: Sequence[str] | Sequence[Sequence[str]], edges: int
) -> list[tuple[str, ...]]:
  if primitives and isinstance(primitives[0], str):
    return [tuple(primitives)] * edges
  per_edge = [tuple(ops) for ops in primitives]
  if len(per_edge) != edges:
    raise ValueError(f"per-edge primitives lists {len(per_edge)} edges; expected {edges}")
  return per_edge


def derive_cell(
  weights: Any,
  primitives: Sequence[str] | Sequence[Sequence[str]] = PRIMITIVES,
  nodes: int = 4,
  mask: Any = None,
) -> tuple[tuple[str, int], ...]:
  """DARTS discretisation of one cell from op weights of shape (num_edges(nodes), num_ops).

  `weights` are already normalised (softmax of α, or softmax(α)·edge weight for PC-DARTS).
  Per node, incoming edges are ranked by their strongest non-`none` op (stable, so ties keep
  the lower state first), the top 2 are kept in rank order, each with its strongest
  non-`none` op. `primitives` is one op tuple shared by every edge, or one tuple per edge
  (P-DARTS edges keep different op subsets); `none` may be absent. `mask` (bool, the weights'
  shape) marks the ops still on; an op that is off is never picked.
  """
  weights = np.asarray(weights, dtype=np.float64)
  expected_edges = num_edges(nodes)
  if weights.ndim != 2 or weights.shape[0] != expected_edges:
    raise ValueError(
      f"weights must have shape ({expected_edges}, num_ops) for {nodes} nodes, got {weights.shape}"
    )
  edge_ops = _per_edge_primitives(primitives, expected_edges)
  for edge, ops in enumerate(edge_ops):
    if len(ops) != weights.shape[1]:
      raise ValueError(
        f"edge {edge} has {weights.shape[1]} weights but {len(ops)} primitives {ops}"
      )

  on = np.ones(weights.shape, bool) if mask is None else np.asarray(mask, bool)
  if on.shape != weights.shape:
    raise ValueError(f"mask has shape {on.shape}; expected the weights' {weights.shape}")

  def best_op(edge: int) -> tuple[float, str | None]:
    candidates = [
      (weights[edge, k], op) for k, op in enumerate(edge_ops[edge]) if op != NONE_OP and on[edge, k]
    ]
    if not candidates:
      return -np.inf, None
    best_k = int(np.argmax([w for w, _ in candidates]))
    return candidates[best_k]

  cell = []
  offset = 0
  for node in range(nodes):
    num_inputs = NUM_INPUT_STATES + node
    strengths = {state: best_op(offset + state) for state in range(num_inputs)}
    ranked = sorted(range(num_inputs), key=lambda state: -strengths[state][0])
    kept = ranked[:INPUTS_PER_NODE]
    for state in kept:
      op_name = strengths[state][1]
      if op_name is None:
        raise ValueError(
          f"node {node} needs {INPUTS_PER_NODE} inputs, but edge "
          f"{offset + state} (from state {state}) has no op other than "
          f"'none'"
        )
      cell.append((op_name, state))
    offset += num_inputs
  return tuple(cell)


def derive_genotype(
  alphas_normal: Any,
  alphas_reduce: Any,
  primitives: Sequence[str] | Sequence[Sequence[str]] = PRIMITIVES,
  nodes: int = 4,
  multiplier: int = 4,
) -> Genotype:
  """The DARTS genotype of α logits (numpy or jax, shape (num_edges(nodes), num_ops) each).

  Applies softmax over ops, then `derive_cell`; concat is the last `multiplier` states.
  """
  if not 1 <= multiplier <= nodes:
    raise ValueError(f"multiplier must be in 1..nodes={nodes}, got {multiplier}")
  concat = range(NUM_INPUT_STATES + nodes - multiplier, NUM_INPUT_STATES + nodes)
  return Genotype(
    normal=derive_cell(jax.nn.softmax(jnp.asarray(alphas_normal)), primitives, nodes),
    normal_concat=concat,
    reduce=derive_cell(jax.nn.softmax(jnp.asarray(alphas_reduce)), primitives, nodes),
    reduce_concat=concat,
  )


# ---------------------------------------------------------------------------------------------
# Published genotypes (official DARTS, P-DARTS and PC-DARTS genotypes.py)

DARTS_V1 = Genotype(
  normal=[
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0),
    ("skip_connect", 0),
    ("sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0),
    ("skip_connect", 2),
  ],
  normal_concat=[2, 3, 4, 5],
  reduce=[
    ("max_pool_3x3", 0),
    ("max_pool_3x3", 1),
    ("skip_connect", 2),
    ("max_pool_3x3", 0),
    ("max_pool_3x3", 0),
    ("skip_connect", 2),
    ("skip_connect", 2),
    ("avg_pool_3x3", 0),
  ],
  reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
  normal=[
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("skip_connect", 0),
    ("dil_conv_3x3", 2),
  ],
  normal_concat=[2, 3, 4, 5],
  reduce=[
    ("max_pool_3x3", 0),
    ("max_pool_3x3", 1),
    ("skip_connect", 2),
    ("max_pool_3x3", 1),
    ("max_pool_3x3", 0),
    ("skip_connect", 2),
    ("skip_connect", 2),
    ("max_pool_3x3", 1),
  ],
  reduce_concat=[2, 3, 4, 5],
)

PDARTS = Genotype(
  normal=[
    ("skip_connect", 0),
    ("dil_conv_3x3", 1),
    ("skip_connect", 0),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 3),
    ("sep_conv_3x3", 0),
    ("dil_conv_5x5", 4),
  ],
  normal_concat=range(2, 6),
  reduce=[
    ("avg_pool_3x3", 0),
    ("sep_conv_5x5", 1),
    ("sep_conv_3x3", 0),
    ("dil_conv_5x5", 2),
    ("max_pool_3x3", 0),
    ("dil_conv_3x3", 1),
    ("dil_conv_3x3", 1),
    ("dil_conv_5x5", 3),
  ],
  reduce_concat=range(2, 6),
)

PC_DARTS_cifar = Genotype(  # pylint: disable=invalid-name  (official name)
  normal=[
    ("sep_conv_3x3", 1),
    ("skip_connect", 0),
    ("sep_conv_3x3", 0),
    ("dil_conv_3x3", 1),
    ("sep_conv_5x5", 0),
    ("sep_conv_3x3", 1),
    ("avg_pool_3x3", 0),
    ("dil_conv_3x3", 1),
  ],
  normal_concat=range(2, 6),
  reduce=[
    ("sep_conv_5x5", 1),
    ("max_pool_3x3", 0),
    ("sep_conv_5x5", 1),
    ("sep_conv_5x5", 2),
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 3),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 2),
  ],
  reduce_concat=range(2, 6),
)

PC_DARTS_image = Genotype(  # pylint: disable=invalid-name  (official name)
  normal=[
    ("skip_connect", 1),
    ("sep_conv_3x3", 0),
    ("sep_conv_3x3", 0),
    ("skip_connect", 1),
    ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 3),
    ("sep_conv_3x3", 1),
    ("dil_conv_5x5", 4),
  ],
  normal_concat=range(2, 6),
  reduce=[
    ("sep_conv_3x3", 0),
    ("skip_connect", 1),
    ("dil_conv_5x5", 2),
    ("max_pool_3x3", 1),
    ("sep_conv_3x3", 2),
    ("sep_conv_3x3", 1),
    ("sep_conv_5x5", 0),
    ("sep_conv_3x3", 3),
  ],
  reduce_concat=range(2, 6),
)

BUILTIN_GENOTYPES: Mapping[str, Genotype] = {
  "DARTS_V1": DARTS_V1,
  "DARTS_V2": DARTS_V2,
  "DARTS": DARTS_V2,
  "PDARTS": PDARTS,
  "PC_DARTS_cifar": PC_DARTS_cifar,
  "PC_DARTS_image": PC_DARTS_image,
}


# ---------------------------------------------------------------------------------------------
# JSON files


def genotype_to_dict(genotype: Genotype) -> dict[str, list]:
  """JSON-ready dict: cells as [[op_name, input_state], ...], concats as int lists."""
  return {
    field: [list(item) if isinstance(item, tuple) else item for item in value]
    for field, value in genotype._asdict().items()
  }


def _edges_from_json(field: str, value: Any, source: str) -> list[tuple[str, int]]:
  if not isinstance(value, list):
    raise ValueError(
      f"{source}: field {field!r} must be a list of [op_name, input_index] "
      f"pairs, got {type(value).__name__}"
    )
  edges = []
  for position, item in enumerate(value):
    if (
      not isinstance(item, (list, tuple))
      or len(item) != 2
      or not isinstance(item[0], str)
      or not isinstance(item[1], int)
      or isinstance(item[1], bool)
    ):
      raise ValueError(
        f"{source}: field {field!r} entry {position} must be [op_name, input_index], got {item!r}"
      )
    edges.append((item[0], item[1]))
  return edges


def _concat_from_json(field: str, value: Any, source: str) -> list[int]:
  if not isinstance(value, list) or not all(
    isinstance(i, int) and not isinstance(i, bool) for i in value
  ):
    raise ValueError(f"{source}: field {field!r} must be a list of state indices, got {value!r}")
  return value


def genotype_from_dict(
  data: Any, primitives: Sequence[str] = PRIMITIVES, source: str = "genotype"
) -> Genotype:
  """Validated Genotype from the dict written by `genotype_to_dict`."""
  if not isinstance(data, dict):
    raise ValueError(
      f"{source}: expected a JSON object with fields {GENOTYPE_FIELDS}, got {type(data).__name__}"
    )
  missing = [field for field in GENOTYPE_FIELDS if field not in data]
  if missing:
    raise ValueError(f"{source}: missing field(s) {missing}; a genotype needs {GENOTYPE_FIELDS}")
  unknown = sorted(set(data) - set(GENOTYPE_FIELDS))
  if unknown:
    raise ValueError(f"{source}: unknown field(s) {unknown}; a genotype has {GENOTYPE_FIELDS}")
  genotype = Genotype(
    normal=_edges_from_json("normal", data["normal"], source),
    normal_concat=_concat_from_json("normal_concat", data["normal_concat"], source),
    reduce=_edges_from_json("reduce", data["reduce"], source),
    reduce_concat=_concat_from_json("reduce_concat", data["reduce_concat"], source),
  )
  try:
    return validate_genotype(genotype, primitives)
  except ValueError as error:
    raise ValueError(f"{source}: {error}") from None


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> None:
  """Writes `genotype` as JSON atomically (temp file in the same folder, then os.replace)."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, temp_path = tempfile.mkstemp(dir=folder, prefix=".genotype-", suffix=".json.tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(genotype_to_dict(genotype), f, indent=2)
      f.write("\n")
    os.replace(temp_path, path)
  except BaseException:
    if os.path.exists(temp_path):
      os.remove(temp_path)
    raise


def load_genotype(path: str | os.PathLike, primitives: Sequence[str] = PRIMITIVES) -> Genotype:
  """Reads and validates a genotype JSON file written by `save_genotype`."""
  path = os.fspath(path)
  with open(path) as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError as error:
    raise ValueError(f"genotype file {path!r} is not valid JSON: {error}") from None
  return genotype_from_dict(data, primitives, source=f"genotype file {path!r}")


def resolve_genotype(
  name_or_path: str | os.PathLike | Genotype, primitives: Sequence[str] = PRIMITIVES
) -> Genotype:
  """A built-in genotype by name, a genotype JSON file by path, or a Genotype unchanged."""
  if isinstance(name_or_path, Genotype):
    return validate_genotype(name_or_path, primitives)
  key = os.fspath(name_or_path)
  if key in BUILTIN_GENOTYPES:
    return BUILTIN_GENOTYPES[key]
  if os.path.isfile(key):
    return load_genotype(key, primitives)
  raise ValueError(
    f"unknown genotype {key!r}: not a built-in name "
    f"({', '.join(BUILTIN_GENOTYPES)}) and not an existing JSON file"
  )
