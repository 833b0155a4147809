"""Tests for skillearn_jax.nas.eval_network: structure, shapes, parameter counts, drop path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import eval_network as E
from skillearn_jax.nas import genotypes as G
from skillearn_jax.nas import ops

# One node per cell keeps compiled tests small; the ops cover identity, separable conv,
# pooling and a strided skip (FactorizedReduce).
TINY = G.Genotype(
  normal=[("skip_connect", 0), ("sep_conv_3x3", 1)],
  normal_concat=[2],
  reduce=[("max_pool_3x3", 0), ("skip_connect", 1)],
  reduce_concat=[2],
)


def random_variables(module, *args, **kwargs):
  """Variables with init's structure but numpy-random values: skips compiling the
  initialisers, which dominates the cost of these tiny tests."""
  shapes = jax.eval_shape(lambda k: module.init(k, *args, **kwargs), jax.random.key(0))
  rng = np.random.default_rng(0)

  def fill(path, shape):
    name = jax.tree_util.keystr(path[-1:])
    if "var" in name or "scale" in name:
      return jnp.ones(shape.shape, shape.dtype)
    if "mean" in name or "bias" in name:
      return jnp.zeros(shape.shape, shape.dtype)
    return jnp.asarray(0.3 * rng.standard_normal(shape.shape), shape.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def param_count(network, image_size):
  main, aux = E.split_auxiliary(E.param_shapes(network, image_size))
  return ops.count_params(main), ops.count_params(aux)


def test_tiny_network_parameter_count_by_hand():
  # layers=3, C=4: cell 0 normal (C=4), cells 1, 2 reductions (C=8, 16); multiplier 1.
  stem = 3 * 3 * 3 * 12 + 2 * 12
  relu_conv_bn = lambda c_in, c_out: c_in * c_out + 2 * c_out
  factorized_reduce = lambda c_in, c_out: 2 * c_in * (c_out // 2) + 2 * c_out
  sep_conv_3x3 = lambda c: 2 * (9 * c + c * c + 2 * c)
  cell0 = relu_conv_bn(12, 4) + relu_conv_bn(12, 4) + sep_conv_3x3(4)
  cell1 = relu_conv_bn(12, 8) + relu_conv_bn(4, 8) + factorized_reduce(8, 8)
  cell2 = factorized_reduce(4, 16) + relu_conv_bn(8, 16) + factorized_reduce(16, 16)
  classifier = 16 * 10 + 10
  network = E.NetworkCIFAR(TINY, num_classes=10, layers=3, channels=4)
  main, aux = param_count(network, 32)
  assert main == stem + cell0 + cell1 + cell2 + classifier
  # Auxiliary head on cell 2's 16 channels: conv 1x1 128 + BN, conv 2x2 768 + BN, linear.
  assert aux == 16 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10


def test_auxiliary_heads_follow_official_layers():
  cifar = E.param_shapes(E.make_eval_network("cifar", "DARTS_V2"), 32)["auxiliary_head"]
  imagenet = E.param_shapes(E.make_eval_network("imagenet", "DARTS_V2"), 224)["auxiliary_head"]
  assert cifar["conv_128"]["kernel"].shape == (1, 1, 576, 128)
  assert cifar["conv_768"]["kernel"].shape == (2, 2, 128, 768)
  assert "bn_768" in cifar
  assert "bn_768" not in imagenet  # omitted in the official ImageNet head
  assert imagenet["classifier"]["kernel"].shape == (768, 1000)


def test_imagenet_shapes_without_compiling():
  network = E.NetworkImageNet(G.DARTS_V2, num_classes=7, layers=3, channels=8)
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda k, x: network.init(k, x, train=False), jax.random.key(0), x)
  stem0 = variables["params"]["stem0_conv1"]["kernel"]
  assert stem0.shape == (3, 3, 3, 4)
  # (FactorizedReduce, since the first cell sees reduction_prev=True; C=8 -> halves of 4).
  assert variables["params"]["cells"]["cell_0"]["preprocess0"]["conv_1"]["kernel"].shape == (
    1,
    1,
    8,
    4,
  )
  (logits, aux), _ = jax.eval_shape(
    lambda v, x, k: network.apply(
      v, x, train=True, drop_path_prob=0.1, rngs={"drop_path": k}, mutable=["batch_stats"]
    ),
    variables,
    x,
    jax.random.key(1),
  )
  assert logits.shape == (2, 7) and aux.shape == (2, 7)


def test_make_eval_network_defaults_and_errors(tmp_path):
  net = E.make_eval_network("cifar", "PDARTS")
  assert (net.layers, net.channels, net.num_classes, net.auxiliary) == (20, 36, 10, True)
  net = E.make_eval_network(
    "imagenet", G.DARTS_V1, num_classes=100, layers=8, channels=16, auxiliary=False
  )
  assert (net.layers, net.channels, net.num_classes, net.auxiliary) == (8, 16, 100, False)
  path = tmp_path / "g.json"
  G.save_genotype(TINY, path)
  assert E.make_eval_network("cifar", str(path)).genotype == TINY
  with pytest.raises(ValueError, match="network must be one of"):
    E.make_eval_network("mnist", "DARTS")
  with pytest.raises(ValueError, match="unknown genotype 'NASNet'"):
    E.make_eval_network("cifar", "NASNet")
  with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
    E.param_shapes(E.NetworkCIFAR(TINY, channels=0), 32)


@pytest.fixture(scope="module")
def tiny_cifar():
  network = E.NetworkCIFAR(TINY, num_classes=5, layers=3, channels=4)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  variables = random_variables(network, x, train=False)

  @jax.jit
  def train_apply(variables, x, drop_path_prob, key):
    return network.apply(
      variables,
      x,
      train=True,
      drop_path_prob=drop_path_prob,
      rngs={"drop_path": key},
      mutable=["batch_stats"],
    )

  return network, variables, x, train_apply


def test_tiny_cifar_forward_train_and_eval(tiny_cifar):
  network, variables, x, train_apply = tiny_cifar
  assert set(variables) == {"params", "batch_stats"}
  (logits, aux), updates = train_apply(variables, x, 0.2, jax.random.key(2))
  chex.assert_shape([logits, aux], (4, 5))
  chex.assert_tree_all_finite((logits, aux))
  assert set(updates) == {"batch_stats"}
  logits_eval, aux_eval = jax.jit(lambda v, x: network.apply(v, x, train=False))(variables, x)
  assert aux_eval is None
  chex.assert_shape(logits_eval, (4, 5))
  no_aux = E.NetworkCIFAR(TINY, num_classes=5, layers=3, channels=4, auxiliary=False)
  shapes = jax.eval_shape(
    lambda v: no_aux.apply(v, x, train=True, mutable=["batch_stats"]),
    {"params": E.split_auxiliary(variables["params"])[0], "batch_stats": variables["batch_stats"]},
  )
  assert shapes[0][1] is None


def test_drop_path_deterministic_given_rng(tiny_cifar):
  _, variables, x, train_apply = tiny_cifar
  (a, _), _ = train_apply(variables, x, 0.5, jax.random.key(3))
  (b, _), _ = train_apply(variables, x, 0.5, jax.random.key(3))
  (c, _), _ = train_apply(variables, x, 0.5, jax.random.key(4))
  (d, _), _ = train_apply(variables, x, 0.0, jax.random.key(3))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert not np.allclose(a, d)


def apply_cell(edges, drop_path_prob, key, train=True):
  cell = E.EvalCell(tuple(edges), (2,), channels=4, reduction=False, reduction_prev=False)
  s0 = jax.random.normal(jax.random.key(10), (8, 6, 6, 4))
  s1 = jax.random.normal(jax.random.key(11), (8, 6, 6, 4))
  variables = random_variables(cell, s0, s1, train=False)
  (out, state) = cell.apply(
    variables,
    s0,
    s1,
    train=train,
    drop_path_prob=drop_path_prob,
    rngs={"drop_path": key},
    mutable=["batch_stats", "intermediates"],
    capture_intermediates=True,
  )
  return out, state["intermediates"]


def test_drop_path_never_touches_identity_edges():
  edges = [("skip_connect", 0), ("skip_connect", 1)]
  dropped, _ = apply_cell(edges, 0.9, jax.random.key(5))
  kept, _ = apply_cell(edges, 0.0, jax.random.key(5))
  np.testing.assert_array_equal(dropped, kept)


def test_drop_path_drops_whole_samples_of_non_identity_edges_and_rescales():
  p = 0.5
  out, intermediates = apply_cell([("sep_conv_3x3", 0), ("skip_connect", 1)], p, jax.random.key(6))
  conv_out = intermediates["op_0"]["__call__"][0]
  identity_out = intermediates["op_1"]["__call__"][0]
  residual = np.asarray(out - identity_out)
  dropped = np.all(residual == 0.0, axis=(1, 2, 3))
  assert dropped.any() and not dropped.all()  # batch of 8 at p=0.5, fixed key
  np.testing.assert_allclose(
    residual[~dropped], np.asarray(conv_out)[~dropped] / (1 - p), rtol=1e-5, atol=1e-6
  )


def test_drop_path_inactive_in_eval_mode():
  edges = [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)]
  with_drop, _ = apply_cell(edges, 0.5, jax.random.key(7), train=False)
  without, _ = apply_cell(edges, 0.0, jax.random.key(7), train=False)
  np.testing.assert_array_equal(with_drop, without)
  with pytest.raises(ValueError, match=r"drop_path_prob must be in \[0, 1\), got 1.0"):
    apply_cell(edges, 1.0, jax.random.key(7), train=False)


def test_drop_path_function_statistics_and_traced_probability():
  x = jnp.ones((20_000, 2, 2, 1))
  out = jax.jit(E.drop_path)(x, jnp.float32(0.2), jax.random.key(8))
  values = np.unique(np.asarray(out))
  np.testing.assert_allclose(values, [0.0, 1.25], rtol=1e-6)
  assert np.mean(out[:, 0, 0, 0] == 0) == pytest.approx(0.2, abs=0.015)
  assert float(out.mean()) == pytest.approx(1.0, abs=0.02)  # unbiased
  np.testing.assert_array_equal(E.drop_path(x, 0.0, jax.random.key(8)), x)


def test_reduction_layers():
  assert E.reduction_layers(20) == (6, 13)
  assert E.reduction_layers(14) == (4, 9)
  assert E.reduction_layers(3) == (1, 2)
