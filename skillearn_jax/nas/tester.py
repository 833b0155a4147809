"""The tester of Learning by Passing Tests: data encoders and its two heads.

This module owns the tester's networks (Skillearn §3): the data encoder E
that maps an image to a feature vector, the target-task executor X (one
linear layer to the classes) and the test creator C (one linear layer to two
logits; an example's selection weight is softmax(.)[:, 1], the continuous
relaxation f(d, C, E) in (0, 1) of Eq. 12). Encoders are ResNet-18 and
ResNet-50 with the CIFAR stem (3x3 convolution, stride 1, no max-pool), as
the public LPT code uses, and a tiny two-convolution encoder for tests and
quick runs. BatchNorm statistics live in the 'batch_stats' collection.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ENCODERS = ('tiny', 'resnet18', 'resnet50')
RESNET_WIDTHS = (64, 128, 256, 512)


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  # torch's BatchNorm2d defaults: running-average momentum 0.1, eps 1e-5.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _conv(features: int, size: int, strides: int = 1, name: str | None = None) -> nn.Conv:
  return nn.Conv(
    features, (size, size), strides=(strides, strides), padding=size // 2, use_bias=False, name=name
  )


class _Shortcut(nn.Module):
  """Identity, or a strided 1x1 projection with BatchNorm when shapes change."""

  features: int
  strides: int

  @nn.compact
  def __call__(self, x, train: bool):
    if self.strides == 1 and x.shape[-1] == self.features:
      return x
    x = _conv(self.features, 1, self.strides, name='projection')(x)
    return _batch_norm(train, name='projection_norm')(x)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34); output width = `features`."""

  features: int
  strides: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.relu(_batch_norm(train)(_conv(self.features, 3, self.strides)(x)))
    y = _batch_norm(train)(_conv(self.features, 3)(y))
    return nn.relu(y + _Shortcut(self.features, self.strides)(x, train))


class Bottleneck(nn.Module):
  """1x1 - 3x3 (strided) - 1x1 (ResNet-50+); output width = 4 * `features`."""

  features: int
  strides: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    out = self.features * self.expansion
    y = nn.relu(_batch_norm(train)(_conv(self.features, 1)(x)))
    y = nn.relu(_batch_norm(train)(_conv(self.features, 3, self.strides)(y)))
    y = _batch_norm(train)(_conv(out, 1)(y))
    return nn.relu(y + _Shortcut(out, self.strides)(x, train))


class ResNetEncoder(nn.Module):
  """CIFAR-style ResNet without its classifier: images -> pooled features.

  `pool=False` returns the last feature map instead (used to check the
  stem: a 32x32 input ends at 4x4).
  """

  blocks_per_stage: Sequence[int]
  block: type[nn.Module]

  @property
  def feature_dim(self) -> int:
    return RESNET_WIDTHS[-1] * self.block.expansion

  @nn.compact
  def __call__(self, x, *, train: bool, pool: bool = True):
    x = nn.relu(_batch_norm(train)(_conv(RESNET_WIDTHS[0], 3)(x)))
    for stage, (width, count) in enumerate(zip(RESNET_WIDTHS, self.blocks_per_stage)):
      for i in range(count):
        strides = 2 if stage > 0 and i == 0 else 1
        x = self.block(width, strides)(x, train)
    return jnp.mean(x, axis=(1, 2)) if pool else x


class TinyEncoder(nn.Module):
  """Two small convolutions and average pooling, for tests and quick runs."""

  width: int = 8

  @property
  def feature_dim(self) -> int:
    return 2 * self.width

  @nn.compact
  def __call__(self, x, *, train: bool, pool: bool = True):
    x = nn.relu(_batch_norm(train)(_conv(self.width, 3)(x)))
    x = nn.relu(_batch_norm(train)(_conv(2 * self.width, 3, strides=2)(x)))
    return jnp.mean(x, axis=(1, 2)) if pool else x


def make_encoder(name: str) -> nn.Module:
  """The data encoder called `name`, one of ENCODERS."""
  if name == 'tiny':
    return TinyEncoder()
  if name == 'resnet18':
    return ResNetEncoder((2, 2, 2, 2), BasicBlock)
  if name == 'resnet50':
    return ResNetEncoder((3, 4, 6, 3), Bottleneck)
  raise ValueError(f'encoder: unknown name {name!r}; allowed: {ENCODERS}')


def make_executor(num_classes: int) -> nn.Module:
  """The target-task executor X: one linear layer from features to classes."""
  return nn.Dense(num_classes)


CREATOR = nn.Dense(2)  # the test creator C: features -> (reject, select)


def selection_weights(creator_params, features: jax.Array) -> jax.Array:
  """f(d, C, E) = softmax(C(E(d)))[1] for each row of `features`."""
  logits = CREATOR.apply({'params': creator_params}, features)
  return jax.nn.softmax(logits, axis=-1)[:, 1]


def init_tester(
  key: jax.Array, encoder: nn.Module, num_classes: int, image_shape
) -> tuple[dict, dict, dict, dict]:
  """(encoder params, executor params, creator params, encoder batch_stats)."""
  keys = jax.random.split(key, 3)
  sample = jnp.zeros((2, *image_shape), jnp.float32)
  variables = encoder.init(keys[0], sample, train=False)
  features = jnp.zeros((1, encoder.feature_dim), jnp.float32)
  executor = make_executor(num_classes).init(keys[1], features)['params']
  creator = CREATOR.init(keys[2], features)['params']
  return variables['params'], executor, creator, variables['batch_stats']


def encode(encoder: nn.Module, params, batch_stats, images, *, train: bool):
  """(features, new batch_stats); the statistics only change when training."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if not train:
    return encoder.apply(variables, images, train=False), batch_stats
  features, updates = encoder.apply(variables, images, train=True, mutable=['batch_stats'])
  return features, updates['batch_stats']
