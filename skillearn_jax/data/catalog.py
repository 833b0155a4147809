"""The single entry point from a dataset name to sources and to the papers' split layouts.

Names: 'digits', 'digits_a', 'digits_b' (embedded, offline), 'cifar10', 'cifar100',
'imagenet2012' (tfds, prepared in array_record format) and 'array_dir:PATH' (IDX / NumPy
files). `build_source(name, split)` returns one split. `search_data` gives the architecture
search layout (the training split cut by `train_portion` into a weight half and an
architecture half); `evaluation_data` gives the evaluation layout (train on the whole training
split, report on the test split).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from skillearn_jax.data import digits
from skillearn_jax.data.array_dir import PREFIX as ARRAY_DIR_PREFIX
from skillearn_jax.data.array_dir import array_dir_source
from skillearn_jax.data.sources import Source
from skillearn_jax.data.splits import search_split
from skillearn_jax.data.tfds_source import TFDS_DATASETS, TfdsSource

DATASET_NAMES = (*digits.TASKS, *TFDS_DATASETS, ARRAY_DIR_PREFIX + "PATH")


def build_source(name: str, split: str, *, data_dir: Optional[str] = None) -> Source:
  """One split ('train' / 'test'; array dirs also 'all') of dataset `name`.

  `data_dir` is the tfds data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets); the
  other datasets ignore it.
  """
  if name in digits.TASKS:
    return digits.digits_source(name, split)
  if name in TFDS_DATASETS:
    return TfdsSource(name, split, data_dir=data_dir)
  if isinstance(name, str) and name.startswith(ARRAY_DIR_PREFIX):
    path = name[len(ARRAY_DIR_PREFIX) :]
    if not path:
      raise ValueError(f"dataset {name!r} names no directory; write {ARRAY_DIR_PREFIX}PATH")
    return array_dir_source(path, split)
  raise ValueError(f"dataset name must be one of {DATASET_NAMES}; got {name!r}")


@dataclasses.dataclass(frozen=True)
class SearchData:
  """Architecture search data: weights train on `weight_indices`, the architecture (and other
  upper-level parameters) on `architecture_indices`, both indices into `source`."""

  source: Source
  weight_indices: np.ndarray
  architecture_indices: np.ndarray


@dataclasses.dataclass(frozen=True)
class EvaluationData:
  """Architecture evaluation data: train on all of `train`, report on all of `test`."""

  train: Source
  test: Source


def search_data(
  name: str, *, train_portion: float = 0.5, split: str = "train", data_dir: Optional[str] = None
) -> SearchData:
  """The search layout of `split` (the official training split unless told otherwise)."""
  source = build_source(name, split, data_dir=data_dir)
  weight_indices, architecture_indices = search_split(len(source), train_portion)
  return SearchData(source, weight_indices, architecture_indices)


def evaluation_data(name: str, *, data_dir: Optional[str] = None) -> EvaluationData:
  return EvaluationData(
    build_source(name, "train", data_dir=data_dir), build_source(name, "test", data_dir=data_dir)
  )
