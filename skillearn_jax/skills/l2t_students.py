"""The students of Learning to Teach: the models a teacher picks data for, and their optimizers.

This module owns the student architectures (`l2t.student.arch`): an MLP (784-500-10 on MNIST,
a smaller hidden layer on the embedded digits), a small CNN, and the CIFAR ResNets of depth
6n + 2 (ResNet-32: n = 5, ResNet-110: n = 18; 16/32/64 channels). The ResNets normalise with
GroupNorm instead of BatchNorm: an episode is a pure `lax.scan` over student steps vmapped
over students, and batch statistics would have to ride along as mutable state computed on
batches whose size the teacher changes. `make_student(block, num_classes)` returns
(flax module, optax optimizer) from a config block.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import optax

ARCHS = ('mlp', 'cnn', 'resnet')
OPTIMIZERS = ('sgd', 'momentum', 'adam')
RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)  # 6n + 2


class MLP(nn.Module):
  hidden: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class CNN(nn.Module):
  """Two 3x3 conv + 2x2 max-pool blocks (32, 64 channels), a dense layer of 128, the head."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    for channels in (32, 64):
      x = nn.relu(nn.Conv(channels, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2), padding='SAME')
    x = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(x)


def _norm(channels: int) -> nn.Module:
  return nn.GroupNorm(num_groups=min(8, channels))


class ResBlock(nn.Module):
  channels: int
  stride: int

  @nn.compact
  def __call__(self, x):
    y = nn.relu(
      _norm(self.channels)(nn.Conv(self.channels, (3, 3), self.stride, use_bias=False)(x))
    )
    y = _norm(self.channels)(nn.Conv(self.channels, (3, 3), use_bias=False)(y))
    if self.stride != 1 or x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1), self.stride, use_bias=False)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """He et al.'s CIFAR ResNet-(6n + 2): three stages of n basic blocks, 16/32/64 channels."""

  depth: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    n = (self.depth - 2) // 6
    x = nn.relu(_norm(16)(nn.Conv(16, (3, 3), use_bias=False)(x)))
    for stage, channels in enumerate((16, 32, 64)):
      for block in range(n):
        x = ResBlock(channels, 2 if stage and not block else 1)(x)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def make_model(block, num_classes: int) -> nn.Module:
  if block.arch == 'mlp':
    return MLP(tuple(int(h) for h in block.hidden), num_classes)
  if block.arch == 'cnn':
    return CNN(num_classes)
  return ResNet(int(block.depth), num_classes)


def make_optimizer(block) -> optax.GradientTransformation:
  if block.optimizer == 'adam':
    return optax.adam(block.lr)
  if block.optimizer == 'momentum':
    return optax.sgd(block.lr, momentum=block.momentum)
  return optax.sgd(block.lr)


def make_student(block, num_classes: int):
  """(flax module, optax optimizer) of a `l2t.student`-shaped config block."""
  return make_model(block, num_classes), make_optimizer(block)
