"""The search-space value: masks, architecture parameters, genotypes, the supernet."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import genotypes
from skillearn_jax.nas import ops
from skillearn_jax.nas import space as space_lib


def _random_arch(space, seed):
  rng = np.random.default_rng(seed)
  return {c: rng.normal(size=(space.num_edges, len(space.primitives))) for c in space.cell_types}


@pytest.mark.parametrize('nodes,multiplier', [(4, 4), (3, 2), (2, 2)])
def test_the_full_space_derives_the_darts_genotype(nodes, multiplier):
  space = space_lib.darts(nodes=nodes, multiplier=multiplier)
  for seed in range(5):
    arch = _random_arch(space, seed)
    assert space.genotype(arch) == genotypes.derive_genotype(
      arch['normal'], arch['reduce'], nodes=nodes, multiplier=multiplier
    )


def test_a_pruned_space_derives_only_ops_still_on():
  space = space_lib.darts()
  rng = np.random.default_rng(0)
  masks = {c: rng.random((space.num_edges, len(ops.PRIMITIVES))) < 0.4 for c in space.cell_types}
  for mask in masks.values():
    mask[np.arange(space.num_edges), rng.integers(1, len(ops.PRIMITIVES), space.num_edges)] = True
  pruned = space.with_masks(masks)
  for seed in range(10):
    arch = _random_arch(space, seed)
    # The strongest op of every edge is one that is off: the full space would name it.
    for c in space.cell_types:
      arch[c] = np.where(masks[c], arch[c], arch[c] + 10.0)
    full, derived = space.genotype(arch), pruned.genotype(arch)
    assert full != derived
    for c in space.cell_types:
      edges, _ = derived.cell(c)
      for node in range(space.nodes):
        for op, state in edges[2 * node : 2 * node + 2]:
          edge = sum(2 + i for i in range(node)) + state
          assert masks[c][edge, ops.PRIMITIVES.index(op)], (c, node, op, state)


def test_pruning_per_edge_leaves_other_edges_alone():
  space = space_lib.darts(nodes=2, multiplier=2)
  mask = np.ones((space.num_edges, len(ops.PRIMITIVES)), bool)
  mask[0, ops.PRIMITIVES.index('sep_conv_3x3')] = False
  pruned = space.with_masks({'normal': mask})
  arch = {c: np.zeros((space.num_edges, len(ops.PRIMITIVES))) for c in space.cell_types}
  arch['normal'][:, ops.PRIMITIVES.index('sep_conv_3x3')] = 5.0
  normal, _ = pruned.genotype(arch).cell('normal')
  assert ('sep_conv_3x3', 1) in normal[:2]  # node 0's edge from state 1 keeps it
  assert ('sep_conv_3x3', 0) not in normal[:2]  # its edge from state 0 (edge 0) lost it
  assert ('sep_conv_3x3', 0) in normal[2:]  # node 1's edge from state 0 keeps it
  weights = pruned.op_weights(arch)
  assert float(weights['normal'][0, ops.PRIMITIVES.index('sep_conv_3x3')]) == 0.0
  np.testing.assert_allclose(np.asarray(weights['normal']).sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(
    np.asarray(weights['reduce']), np.asarray(jax.nn.softmax(jnp.asarray(arch['reduce']), -1))
  )


def test_an_off_op_neither_moves_the_supernet_nor_gets_a_gradient():
  space = space_lib.darts(nodes=2, multiplier=2)
  mask = np.ones((space.num_edges, len(ops.PRIMITIVES)), bool)
  off = ops.PRIMITIVES.index('max_pool_3x3')
  mask[:, off] = False
  pruned = space.with_masks({'normal': mask, 'reduce': mask})
  net = pruned.supernet(channels=4, num_classes=3, layers=3, remat=False)  # normal, 2 reduce
  arch = pruned.init_arch(jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
  variables = jax.jit(lambda a: net.init(jax.random.key(0), x, a, train=False))(arch)

  @jax.jit
  def loss(arch):
    return jnp.sum(net.apply(variables, x, arch, train=False) ** 2)

  moved = {c: a.at[:, off].add(3.0) for c, a in arch.items()}
  assert float(loss(moved)) == pytest.approx(float(loss(arch)), rel=1e-6)
  grads = jax.grad(loss)(arch)
  for c in pruned.cell_types:
    assert np.all(np.asarray(grads[c])[:, off] == 0.0)
    assert np.any(np.asarray(grads[c]) != 0.0)


def test_masks_must_fit_the_space_and_leave_each_edge_an_op():
  space = space_lib.darts(nodes=2, multiplier=2)
  with pytest.raises(ValueError, match='expected a cell type'):
    space.with_masks({'normal': np.ones((3, 8), bool)})
  empty = np.ones((space.num_edges, 8), bool)
  empty[1] = False
  with pytest.raises(ValueError, match='has no op on'):
    space.with_masks({'reduce': empty})


def test_the_arch_init_is_the_official_draw():
  space = space_lib.darts()
  arch = space.init_arch(jax.random.key(0))
  assert set(arch) == set(space.cell_types)
  assert arch['normal'].shape == (14, 8) and arch['normal'].dtype == jnp.float32
  assert float(jnp.std(arch['normal'])) == pytest.approx(1e-3, rel=0.3)
