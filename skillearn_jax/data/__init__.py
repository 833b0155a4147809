"""Data: random-access image sources (embedded digits, array directories, tfds), augmentation,
deterministic search / evaluation splits and resumable batch streams."""

from skillearn_jax.data.augment import ArrayAugment, ImagenetAugment, eval_augment, train_augment
from skillearn_jax.data.catalog import (
  DATASET_NAMES,
  EvaluationData,
  SearchData,
  build_source,
  evaluation_data,
  search_data,
)
from skillearn_jax.data.digits import interleaving_tasks
from skillearn_jax.data.sources import ArraySource, Source, SourceInfo
from skillearn_jax.data.splits import holdout_split, search_split
from skillearn_jax.data.stream import BatchStream, eval_batches
from skillearn_jax.data.tfds_source import DatasetUnavailableError

__all__ = [
  "DATASET_NAMES",
  "ArrayAugment",
  "ArraySource",
  "BatchStream",
  "DatasetUnavailableError",
  "EvaluationData",
  "ImagenetAugment",
  "SearchData",
  "Source",
  "SourceInfo",
  "build_source",
  "eval_augment",
  "eval_batches",
  "evaluation_data",
  "holdout_split",
  "interleaving_tasks",
  "search_data",
  "search_split",
  "train_augment",
]
