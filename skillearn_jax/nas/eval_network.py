"""Evaluation networks built from a genotype (Flax, NHWC), as in the official DARTS code.

This module owns the networks a searched genotype is trained and reported with: the cell that
wires a genotype's fixed ops (affine batch norm), drop path, the CIFAR network (3x3 stem,
`layers` cells with reductions at layers//3 and 2·layers//3) and the ImageNet network (two
strided stems, first cell sees a reduced input), their auxiliary heads, a builder with the
published defaults per network, and the parameter count the papers report (auxiliary head
excluded, as the official `count_parameters_in_MB`). Networks are called as
`net.apply(variables, x, train=..., drop_path_prob=..., rngs={'drop_path': key},
mutable=['batch_stats'])` and return `(logits, aux_logits or None)`; aux logits come only in
training, as in the official code, but the auxiliary head's parameters are created at init
whatever `train` is, so one init serves both modes. Every module takes `conv_impl`
(`conv.CONV_IMPLS`); the networks resolve 'auto' when built and hand the concrete
implementation to every convolution (it changes the program, never the variables). Their
`precision` (`ops.PRECISIONS`) casts the image on entry: at 'bfloat16' every op follows in
bfloat16, while the parameters, batch-norm statistics and the logits stay float32.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from skillearn_jax.nas import conv, ops
from skillearn_jax.nas.genotypes import Genotype, resolve_genotype, validate_genotype

AUXILIARY_HEAD = "auxiliary_head"
DROP_PATH_RNG = "drop_path"

# Published evaluation settings: DARTS CIFAR-10 (20 cells, C=36) and ImageNet (14 cells, C=48).
NETWORK_DEFAULTS: Mapping[str, Mapping[str, int]] = {
  "cifar": dict(layers=20, channels=36, num_classes=10, image_size=32),
  "imagenet": dict(layers=14, channels=48, num_classes=1000, image_size=224),
}


def drop_path(x: jax.Array, drop_prob: Any, key: jax.Array) -> jax.Array:
  """Zeroes whole samples of `x` (leading axis) with probability `drop_prob` and scales the
  kept ones by 1/keep, so the expectation is unchanged."""
  keep_prob = 1.0 - jnp.asarray(drop_prob, x.dtype)
  mask = jax.random.bernoulli(key, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
  return x / keep_prob * mask.astype(x.dtype)


def reduction_layers(layers: int) -> tuple[int, ...]:
  """Indices of the reduction cells: layers//3 and 2·layers//3."""
  return tuple(sorted({layers // 3, 2 * layers // 3}))


def _drop_path_active(train: bool, drop_path_prob: Any) -> bool:
  # A traced probability (ramped inside a jitted step) is always applied; drop 0 is exact.
  if isinstance(drop_path_prob, (int, float)):
    if not 0.0 <= drop_path_prob < 1.0:
      raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
    return train and drop_path_prob > 0.0
  return train


class EvalCell(nn.Module):
  """One cell of a genotype: preprocess both inputs to `channels`, then each node sums its
  two ops; ops reading the cell inputs of a reduction cell have stride 2. Drop path applies
  to every op output except identities (stride-1 skip_connect)."""

  edges: tuple[tuple[str, int], ...]
  concat: tuple[int, ...]
  channels: int
  reduction: bool
  reduction_prev: bool
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, s0, s1, *, train: bool, drop_path_prob: Any = 0.0):
    c, impl = self.channels, conv.resolve(self.conv_impl)
    if self.reduction_prev:
      s0 = ops.FactorizedReduce(c, True, impl, name="preprocess0")(s0, train=train)
    else:
      s0 = ops.ReLUConvBN(c, affine=True, conv_impl=impl, name="preprocess0")(s0, train=train)
    s1 = ops.ReLUConvBN(c, affine=True, conv_impl=impl, name="preprocess1")(s1, train=train)
    states = [s0, s1]
    drop = _drop_path_active(train, drop_path_prob)
    for node in range(len(self.edges) // 2):
      node_sum = 0.0
      for position in (2 * node, 2 * node + 1):
        op_name, source = self.edges[position]
        stride = 2 if self.reduction and source < 2 else 1
        op = ops.make_op(op_name, c, stride, True, f"op_{position}", impl)
        h = op(states[source], train=train)
        if drop and not isinstance(op, ops.Identity):
          h = drop_path(h, drop_path_prob, self.make_rng(DROP_PATH_RNG))
        node_sum = node_sum + h
      states.append(node_sum)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class CellStack(nn.Module):
  """`layers` cells of `genotype`; channels double at each reduction cell. Returns the last
  cell's output and the output of cell 2·layers//3 (the auxiliary head's input)."""

  genotype: Genotype
  layers: int
  channels: int
  first_reduction_prev: bool
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, s0, s1, *, train: bool, drop_path_prob: Any = 0.0):
    c, reduction_prev = self.channels, self.first_reduction_prev
    auxiliary_input = None
    for i in range(self.layers):
      reduction = i in reduction_layers(self.layers)
      if reduction:
        c *= 2
      edges, concat = self.genotype.cell("reduce" if reduction else "normal")
      cell = EvalCell(
        edges, concat, c, reduction, reduction_prev, conv.resolve(self.conv_impl), name=f"cell_{i}"
      )
      s0, s1 = s1, cell(s0, s1, train=train, drop_path_prob=drop_path_prob)
      reduction_prev = reduction
      if i == 2 * self.layers // 3:
        auxiliary_input = s1
    return s1, auxiliary_input


class AuxiliaryHead(nn.Module):
  """ReLU → AvgPool 5 (no padding) → 1x1 conv 128 → BN → ReLU → 2x2 conv 768 → [BN] → ReLU
  → Linear. CIFAR: pool stride 3, BN after the 768 conv. ImageNet: pool stride 2 and no
  BN there (the official code comments it out to match the paper's runs)."""

  num_classes: int
  pool_stride: int
  bn_after_768: bool
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    impl = conv.resolve(self.conv_impl)
    x = nn.avg_pool(nn.relu(x), (5, 5), strides=(self.pool_stride, self.pool_stride))
    x = ops.conv(128, 1, name="conv_128", conv_impl=impl)(x)
    x = nn.relu(ops.batch_norm(True, train, name="bn_128", dtype=ops.low_precision(x))(x))
    x = ops.conv(768, 2, name="conv_768", conv_impl=impl)(x)
    if self.bn_after_768:
      x = ops.batch_norm(True, train, name="bn_768", dtype=ops.low_precision(x))(x)
    x = nn.relu(x).reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=ops.TORCH_DEFAULT_INIT, name="classifier")(x)


def _classify(
  module: nn.Module, features, auxiliary_input, auxiliary_head: AuxiliaryHead, train: bool
):
  """Global average pool + linear; the auxiliary head runs in training (and at init, so its
  parameters exist whatever mode the network was initialised in)."""
  logits = nn.Dense(module.num_classes, kernel_init=ops.TORCH_DEFAULT_INIT, name="classifier")(
    jnp.mean(features.astype(jnp.float32) if ops.low_precision(features) else features, (1, 2))
  )
  aux_logits = None
  if module.auxiliary and (train or module.is_initializing()):
    aux_logits = auxiliary_head(auxiliary_input, train=train)
  return logits, aux_logits if train else None


def _resolve_conv_impl(module: nn.Module) -> None:
  # at construction, before Flax freezes the fields: the module, and any jit keyed on it,
  # then carries the concrete implementation, not 'auto'
  object.__setattr__(module, "conv_impl", conv.resolve(module.conv_impl))
  if module.precision not in ops.PRECISIONS:
    raise ValueError(f"precision must be one of {ops.PRECISIONS}, got {module.precision!r}")


def _at_precision(module: nn.Module, x):
  """The image `x` in the network's precision (float32 images pass as they are)."""
  return x if module.precision == "float32" else x.astype(module.precision)


def _check_fields(module: nn.Module) -> None:
  for field in ("num_classes", "layers", "channels"):
    if getattr(module, field) < 1:
      raise ValueError(f"{field} must be >= 1, got {getattr(module, field)}")
  validate_genotype(module.genotype)


class NetworkCIFAR(nn.Module):
  """DARTS CIFAR evaluation network: conv 3x3 (3 → 3C) + BN stem, `layers` cells, auxiliary
  head after cell 2·layers//3 (8x8 input at 32x32 images), global pool, linear."""

  genotype: Genotype
  num_classes: int = 10
  layers: int = 20
  channels: int = 36
  auxiliary: bool = True
  stem_multiplier: int = 3
  conv_impl: str = "auto"  # conv.CONV_IMPLS; 'auto' is resolved when the network is built
  precision: str = "float32"  # ops.PRECISIONS: the activations' and convolutions' dtype

  def __post_init__(self):
    _resolve_conv_impl(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, *, train: bool, drop_path_prob: Any = 0.0):
    _check_fields(self)
    impl = self.conv_impl
    s = ops.conv(
      self.stem_multiplier * self.channels, 3, padding=1, name="stem_conv", conv_impl=impl
    )(_at_precision(self, x))
    s = ops.batch_norm(True, train, name="stem_bn", dtype=ops.low_precision(s))(s)
    features, auxiliary_input = CellStack(
      self.genotype, self.layers, self.channels, False, impl, name="cells"
    )(s, s, train=train, drop_path_prob=drop_path_prob)
    head = AuxiliaryHead(
      self.num_classes, pool_stride=3, bn_after_768=True, conv_impl=impl, name=AUXILIARY_HEAD
    )
    return _classify(self, features, auxiliary_input, head, train)


class NetworkImageNet(nn.Module):
  """DARTS ImageNet evaluation network: stem0 (conv 3x3 s2 → C/2, BN, ReLU, conv 3x3 s2 → C,
  BN), stem1 (ReLU, conv 3x3 s2, BN), `layers` cells (the first sees a reduced input),
  auxiliary head after cell 2·layers//3, global pool (7x7 at 224 inputs), linear."""

  genotype: Genotype
  num_classes: int = 1000
  layers: int = 14
  channels: int = 48
  auxiliary: bool = True
  conv_impl: str = "auto"  # conv.CONV_IMPLS; 'auto' is resolved when the network is built
  precision: str = "float32"  # ops.PRECISIONS: the activations' and convolutions' dtype

  def __post_init__(self):
    _resolve_conv_impl(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, *, train: bool, drop_path_prob: Any = 0.0):
    _check_fields(self)
    c, impl = self.channels, self.conv_impl
    x = _at_precision(self, x)
    dtype = ops.low_precision(x)
    s0 = ops.conv(c // 2, 3, stride=2, padding=1, name="stem0_conv1", conv_impl=impl)(x)
    s0 = nn.relu(ops.batch_norm(True, train, name="stem0_bn1", dtype=dtype)(s0))
    s0 = ops.conv(c, 3, stride=2, padding=1, name="stem0_conv2", conv_impl=impl)(s0)
    s0 = ops.batch_norm(True, train, name="stem0_bn2", dtype=dtype)(s0)
    s1 = ops.conv(c, 3, stride=2, padding=1, name="stem1_conv", conv_impl=impl)(nn.relu(s0))
    s1 = ops.batch_norm(True, train, name="stem1_bn", dtype=dtype)(s1)
    features, auxiliary_input = CellStack(self.genotype, self.layers, c, True, impl, name="cells")(
      s0, s1, train=train, drop_path_prob=drop_path_prob
    )
    head = AuxiliaryHead(
      self.num_classes, pool_stride=2, bn_after_768=False, conv_impl=impl, name=AUXILIARY_HEAD
    )
    return _classify(self, features, auxiliary_input, head, train)


NETWORKS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


def make_eval_network(
  network: str,
  genotype: Genotype | str,
  *,
  num_classes: int | None = None,
  layers: int | None = None,
  channels: int | None = None,
  auxiliary: bool = True,
  conv_impl: str = "auto",
  precision: str = "float32",
) -> nn.Module:
  """The 'cifar' or 'imagenet' evaluation network of `genotype` (a Genotype, built-in name
  or JSON path); unset sizes take the published defaults (NETWORK_DEFAULTS); its
  convolutions run by `conv_impl` (conv.CONV_IMPLS, resolved here) in `precision`
  (ops.PRECISIONS)."""
  if network not in NETWORKS:
    raise ValueError(f"network must be one of {tuple(NETWORKS)}, got {network!r}")
  defaults = NETWORK_DEFAULTS[network]
  return NETWORKS[network](
    genotype=resolve_genotype(genotype),
    num_classes=defaults["num_classes"] if num_classes is None else num_classes,
    layers=defaults["layers"] if layers is None else layers,
    channels=defaults["channels"] if channels is None else channels,
    auxiliary=auxiliary,
    conv_impl=conv.resolve(conv_impl),
    precision=precision,
  )


def split_auxiliary(params: Mapping[str, Any]) -> tuple[dict, dict]:
  """(main parameters, auxiliary-head parameters) of a network's `params` collection."""
  main = {name: value for name, value in params.items() if name != AUXILIARY_HEAD}
  return main, dict(params.get(AUXILIARY_HEAD, {}))


def param_shapes(network: nn.Module, image_size: int, batch: int = 1) -> Any:
  """The network's `params` as ShapeDtypeStructs, via jax.eval_shape (nothing compiled)."""
  x = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda key, x: network.init(key, x, train=False), jax.random.key(0), x)
  return variables["params"]


def count_eval_params(
  genotype: Genotype | str,
  network: str = "cifar",
  *,
  num_classes: int | None = None,
  layers: int | None = None,
  channels: int | None = None,
) -> dict[str, Any]:
  """Parameter counts of the evaluation network: `params` and `params_m` exclude the
  auxiliary head (reported separately as `auxiliary_params`)."""
  model = make_eval_network(
    network, genotype, num_classes=num_classes, layers=layers, channels=channels, auxiliary=True
  )
  image_size = NETWORK_DEFAULTS[network]["image_size"]
  main, auxiliary = split_auxiliary(param_shapes(model, image_size))
  params = ops.count_params(main)
  return {
    "network": network,
    "layers": model.layers,
    "channels": model.channels,
    "num_classes": model.num_classes,
    "params": params,
    "params_m": params / 1e6,
    "auxiliary_params": ops.count_params(auxiliary),
  }
