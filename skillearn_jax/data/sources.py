"""Random-access image sources: the contract every dataset in `data/` meets.

A source is a finite, indexable collection of labelled images plus the metadata a model and
an augmentation pipeline need (`SourceInfo`: name, split, number of classes, raw image shape,
per-channel mean/std, whether horizontal flips preserve the label). `get(indices)` returns
`(images, labels)`: images are HWC, either uint8 on a 0..255 scale or float32 on a 0..1 scale
(`to_unit_float` maps both to float32 in [0, 1]); when the image shape is variable (ImageNet,
`image_shape == (None, None, C)`) `get` returns a list of arrays instead of one stacked array,
and the augmentation pipeline crops them to a common size. `ArraySource` is the in-memory
implementation shared by the embedded digits and array directories.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence, Union

import numpy as np

Images = Union[np.ndarray, list]


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """Metadata of one split of one dataset; mean/std are per channel on the 0..1 scale."""

  name: str
  split: str
  num_classes: int
  image_shape: tuple  # (H, W, C); H and W are None for variable-size images.
  mean: tuple
  std: tuple
  horizontal_flip_preserves_label: bool

  @property
  def variable_size(self) -> bool:
    return self.image_shape[0] is None or self.image_shape[1] is None


class Source(Protocol):
  """A random-access labelled image collection."""

  info: SourceInfo

  def __len__(self) -> int: ...

  def get(self, indices: Sequence[int]) -> tuple[Images, np.ndarray]: ...


def to_unit_float(images: np.ndarray) -> np.ndarray:
  """uint8 images (0..255) or float images (0..1) -> float32 in [0, 1]."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  if np.issubdtype(images.dtype, np.floating):
    return images.astype(np.float32, copy=False)
  raise ValueError(
    f"images.dtype={images.dtype} is not supported; allowed: uint8 (0..255) or float (0..1)"
  )


def channel_stats(images: np.ndarray) -> tuple[tuple, tuple]:
  """Per-channel (mean, std) of NHWC images on the 0..1 scale, as plain float tuples."""
  pixels = to_unit_float(images).reshape(-1, images.shape[-1])
  mean = pixels.mean(axis=0, dtype=np.float64)
  std = pixels.std(axis=0, dtype=np.float64)
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_indices(indices: Sequence[int], length: int, name: str) -> np.ndarray:
  """Indices as an int64 array, with a ValueError naming the source when out of range."""
  indices = np.asarray(indices, dtype=np.int64).reshape(-1)
  if indices.size and (indices.min() < 0 or indices.max() >= length):
    raise ValueError(
      f"indices for source {name!r} must lie in [0, {length}); got min={indices.min()}, "
      f"max={indices.max()}"
    )
  return indices


class ArraySource:
  """A source held in memory as an NHWC image array and an integer label array."""

  def __init__(self, info: SourceInfo, images: np.ndarray, labels: np.ndarray):
    if images.ndim != 4:
      raise ValueError(f"images of {info.name!r} must be NHWC (4 dims); got shape {images.shape}")
    if len(images) != len(labels):
      raise ValueError(
        f"{info.name!r}: {len(images)} images but {len(labels)} labels; they must match"
      )
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
      raise ValueError(
        f"{info.name!r}: labels must lie in [0, num_classes={info.num_classes}); got "
        f"min={labels.min()}, max={labels.max()}"
      )
    self.info = info
    self.images = images
    self.labels = labels

  def __len__(self) -> int:
    return len(self.labels)

  def get(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    indices = check_indices(indices, len(self), self.info.name)
    return self.images[indices], self.labels[indices]
