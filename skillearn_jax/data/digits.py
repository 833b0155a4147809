"""The embedded offline dataset: scikit-learn's bundled 8x8 handwritten digits, and two tasks.

scikit-learn ships 1,797 grayscale 8x8 digit images with pixel values 0..16; they are served
as float32 in [0, 1] (value / 16), one channel, so every code path runs without a network or a
prepared dataset. A fixed permutation (seed `SPLIT_SEED`) holds out `NUM_TEST` = 360 images as
the 'test' split; the other 1,437 form 'train'. Normalization uses the mean/std of all 1,797
images (a dataset constant, like the published CIFAR constants).

Two tasks with distinct label spaces, for interleaving / multi-task learning (the IL paper
pairs CIFAR-100 with CIFAR-10: different images, label spaces of different size): each split
is cut into two disjoint halves of the same fixed permutation.
  * 'digits_a' (first half):  10-way digit identity, playing CIFAR-100's role (more classes).
  * 'digits_b' (second half): 5-way `digit mod 5` ({0,5}, {1,6}, {2,7}, {3,8}, {4,9}), playing
    CIFAR-10's role. Mod 5 rather than parity: each class merges two unrelated digits, so the
    encoder still has to tell all ten digits apart (the features task A needs, which is what
    makes transfer between the tasks plausible) while the head's label space has a different
    size; five balanced classes also keep chance accuracy (20 %) far from a trivial 50 %.
'digits' is the whole 10-way dataset (both halves). `interleaving_tasks()` names the pair.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

from skillearn_jax.data.sources import ArraySource, SourceInfo, channel_stats
from skillearn_jax.data.splits import holdout_split

NUM_IMAGES = 1797
NUM_TEST = 360
SPLIT_SEED = 0
PIXEL_MAX = 16.0
SPLITS = ("train", "test")


class DigitsTask(NamedTuple):
  """One digits task: which half of each split it sees and how digits map to its labels."""

  num_classes: int
  half: str  # 'all', 'first' or 'second' half of the split's fixed permutation
  relabel: Callable[[np.ndarray], np.ndarray]
  description: str


TASKS = {
  "digits": DigitsTask(10, "all", lambda digit: digit, "10-way digit identity, all images"),
  "digits_a": DigitsTask(
    10, "first", lambda digit: digit, "10-way digit identity on the first half"
  ),
  "digits_b": DigitsTask(
    5, "second", lambda digit: digit % 5, "5-way digit mod 5 on the second half"
  ),
}


def interleaving_tasks() -> tuple[str, str]:
  """Dataset names of the two-task digits pair (10-way then 5-way, like CIFAR-100/CIFAR-10).

  The tasks see disjoint images (the two halves of every split) and label spaces of different
  size; see the module docstring for why digit mod 5 is the second label space.
  """
  return ("digits_a", "digits_b")


@functools.lru_cache(maxsize=1)
def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # Imported lazily: sklearn takes ~1.5 s to import.

  bundle = load_digits()
  images = (bundle.images / PIXEL_MAX).astype(np.float32)[..., None]
  images.flags.writeable = False
  return images, bundle.target.astype(np.int64)


def _check(name: str, split: str) -> DigitsTask:
  if name not in TASKS:
    raise ValueError(f"digits dataset name must be one of {tuple(TASKS)}; got {name!r}")
  if split not in SPLITS:
    raise ValueError(f"split of {name!r} must be one of {SPLITS}; got {split!r}")
  return TASKS[name]


def digits_indices(name: str, split: str) -> np.ndarray:
  """Indices into the 1,797 bundled images that form `split` of task `name` (fixed order)."""
  task = _check(name, split)
  train, test = holdout_split(NUM_IMAGES, NUM_TEST, SPLIT_SEED)
  indices = train if split == "train" else test
  middle = len(indices) // 2
  return {"all": indices, "first": indices[:middle], "second": indices[middle:]}[task.half]


def digits_source(name: str = "digits", split: str = "train") -> ArraySource:
  """The `split` of digits task `name` ('digits', 'digits_a', 'digits_b') as an ArraySource."""
  task = _check(name, split)
  images, digits = _bundled_digits()
  mean, std = channel_stats(images)
  indices = digits_indices(name, split)
  info = SourceInfo(
    name=name,
    split=split,
    num_classes=task.num_classes,
    image_shape=images.shape[1:],
    mean=mean,
    std=std,
    horizontal_flip_preserves_label=False,
  )
  return ArraySource(info, images[indices], task.relabel(digits[indices]))
