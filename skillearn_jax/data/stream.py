"""Batches: a resumable training stream whose every batch is a pure function of (seed, step),
and an in-order evaluation iterator.

`BatchStream.batch_at(step)` keeps no iterator state: epoch = step // steps_per_epoch, that
epoch's order is a permutation drawn from a numpy Generator seeded by (seed, 'permutation',
epoch), and the augmentation randomness comes from one seeded by (seed, 'augment', step).
Resuming from a checkpoint only needs the step; two runs with the same seed see identical
batches. A seed is one non-negative int or a tuple of them: give each stream of a run its own,
e.g. (run_seed, 0) for the weight half and (run_seed, 1) for the architecture half, so their
orders are independent. Epochs drop the remainder (`steps_per_epoch = len(indices) //
batch_size`), so every batch has the same shape.
`eval_batches` walks a split in order; the last batch is padded to full size with zero images
and `mask` False, so a jitted evaluation step compiles once and metrics weight by `mask`.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from skillearn_jax import config_check
from skillearn_jax.data.sources import Images, Source, check_indices

Augment = Callable[[Images, np.random.Generator], np.ndarray]
PERMUTATION_STREAM = 0
AUGMENT_STREAM = 1

Seed = Union[int, tuple]


def _seed_words(seed: Seed) -> tuple[int, ...]:
  words = seed if isinstance(seed, tuple) else (seed,)
  if not words or not all(isinstance(w, (int, np.integer)) and w >= 0 for w in words):
    raise ValueError(f"seed must be a non-negative integer or a tuple of them; got {seed!r}")
  return tuple(int(w) for w in words)


def seeded_generator(seed: tuple[int, ...], stream: int, counter: int) -> np.random.Generator:
  """A Generator for (seed, stream, counter) that no other triple shares.

  numpy pads entropy shorter than four words with zeros, so [7] and [7, 0] seed the same
  generator; the seed's length in the entropy and the four-word minimum rule that out.
  """
  return np.random.default_rng([stream, counter, len(seed), *seed])


@functools.lru_cache(maxsize=8)
def epoch_permutation(seed: tuple[int, ...], epoch: int, num_examples: int) -> np.ndarray:
  """The order of positions 0..num_examples-1 in `epoch` (cached: consecutive steps share it)."""
  order = seeded_generator(seed, PERMUTATION_STREAM, epoch).permutation(num_examples)
  order.flags.writeable = False
  return order


def _batch(images: np.ndarray, labels: np.ndarray) -> dict:
  return {"image": np.asarray(images, np.float32), "label": np.asarray(labels, np.int32)}


class BatchStream:
  """Shuffled, augmented training batches of `source[indices]`, addressed by step."""

  def __init__(
    self, source: Source, indices: Sequence[int], batch_size: int, seed: Seed, augment: Augment
  ):
    self.indices = check_indices(indices, len(source), source.info.name)
    if not 1 <= batch_size <= len(self.indices):
      raise config_check.ConfigError(
        f"config.data.batch_size: {batch_size} is not allowed; must lie in "
        f"[1, {len(self.indices)}], the examples of this {source.info.name} split"
      )
    self.source = source
    self.batch_size = batch_size
    self.seed = _seed_words(seed)
    self.augment = augment

  @property
  def steps_per_epoch(self) -> int:
    return len(self.indices) // self.batch_size

  def indices_at(self, step: int) -> np.ndarray:
    """Source indices of the batch at `step`."""
    if step < 0:
      raise ValueError(f"step must be >= 0; got {step}")
    epoch, position = divmod(int(step), self.steps_per_epoch)
    order = epoch_permutation(self.seed, epoch, len(self.indices))
    return self.indices[order[position * self.batch_size : (position + 1) * self.batch_size]]

  def batch_at(self, step: int) -> dict:
    """{'image': float32 NHWC, 'label': int32 N} for `step`; a pure function of (seed, step)."""
    images, labels = self.source.get(self.indices_at(step))
    rng = seeded_generator(self.seed, AUGMENT_STREAM, int(step))
    return _batch(self.augment(images, rng), labels)

  def batches(self, start_step: int = 0) -> Iterator[dict]:
    """batch_at(start_step), batch_at(start_step + 1), ... without end."""
    step = start_step
    while True:
      yield self.batch_at(step)
      step += 1


def eval_batches(
  source: Source, indices: Sequence[int], batch_size: int, transform: Augment
) -> Iterator[dict]:
  """In-order batches of `source[indices]` with 'mask'; the last one is padded to batch_size."""
  indices = check_indices(indices, len(source), source.info.name)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}")
  unused_rng = np.random.default_rng(0)  # Evaluation transforms draw no random numbers.
  for start in range(0, len(indices), batch_size):
    images, labels = source.get(indices[start : start + batch_size])
    batch = _batch(transform(images, unused_rng), labels)
    real = len(labels)
    padding = batch_size - real
    batch["mask"] = np.arange(batch_size) < real
    if padding:
      batch["image"] = np.concatenate(
        [batch["image"], np.zeros((padding, *batch["image"].shape[1:]), np.float32)]
      )
      batch["label"] = np.concatenate([batch["label"], np.zeros(padding, np.int32)])
    yield batch
