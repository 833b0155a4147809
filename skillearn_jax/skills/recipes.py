"""Optimizer recipes of the official DARTS-family code, built from optax.

The weight recipe is SGD with momentum, coupled weight decay, gradient-norm
clipping and a cosine schedule stepped once per epoch (torch's
CosineAnnealingLR); the architecture recipe is Adam with coupled L2 weight
decay. Skills share them so LPT, IL and DARTS train weights identically.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def per_epoch_cosine(lr: float, lr_min: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
  """lr_min + (lr - lr_min)(1 + cos(pi e / E)) / 2 with e the epoch index."""
  by_epoch = optax.cosine_decay_schedule(
    init_value=lr, decay_steps=max(epochs, 1), alpha=lr_min / lr if lr else 0.0
  )

  def schedule(step):
    return by_epoch(jnp.asarray(step) // steps_per_epoch)

  return schedule


def sgd_recipe(
  schedule: optax.Schedule, *, momentum: float, weight_decay: float, clip: float
) -> optax.GradientTransformation:
  """torch order: clip the raw gradient, add wd * w, momentum, scale by lr."""
  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(schedule, momentum=momentum or None))
  return optax.chain(*parts)


def adam_recipe(
  lr: float, *, b1: float, b2: float, weight_decay: float, clip: float = 0.0
) -> optax.GradientTransformation:
  """torch Adam with weight_decay: L2 added to the gradient before moments; with `clip` > 0
  the raw gradient's norm is clipped first (P-DARTS clips α's gradients at 5)."""
  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.adam(lr, b1=b1, b2=b2))
  return optax.chain(*parts)
