"""Sources backed by TensorFlow Datasets' random-access `tfds.data_source` (no TensorFlow).

CIFAR-10, CIFAR-100 and ImageNet (ILSVRC2012) are read with `tfds.data_source`, which needs
the dataset prepared in array_record format; examples are decoded lazily, one index at a time,
so ImageNet's JPEGs are decoded only when a batch asks for them. Our split 'test' is tfds
'test' for CIFAR and tfds 'validation' for ImageNet (its 50k labelled images; the tfds 'test'
split has no labels). Nothing is downloaded here: a dataset that is not prepared raises
`DatasetUnavailableError` saying how to prepare it and naming the offline alternatives.
Mean/std are the published per-channel constants of each training set.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from skillearn_jax.data.sources import SourceInfo, check_indices


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
  tfds_name: str
  splits: dict  # our split name -> tfds split name
  num_classes: int
  image_shape: tuple
  mean: tuple
  std: tuple
  manual_download: bool


TFDS_DATASETS = {
  "mnist": TfdsDataset(
    "mnist", {"train": "train", "test": "test"}, 10, (28, 28, 1), (0.1307,), (0.3081,), False
  ),
  "cifar10": TfdsDataset(
    "cifar10",
    {"train": "train", "test": "test"},
    10,
    (32, 32, 3),
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
    False,
  ),
  "cifar100": TfdsDataset(
    "cifar100",
    {"train": "train", "test": "test"},
    100,
    (32, 32, 3),
    (0.5071, 0.4865, 0.4409),
    (0.2673, 0.2564, 0.2762),
    False,
  ),
  "imagenet2012": TfdsDataset(
    "imagenet2012",
    {"train": "train", "test": "validation"},
    1000,
    (None, None, 3),
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
    True,
  ),
}


class DatasetUnavailableError(FileNotFoundError):
  """A tfds dataset is not prepared (in array_record format) in the data directory."""


def _how_to_prepare(name: str, data_dir: Optional[str]) -> str:
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  build = f"tfds build {name} --file_format=array_record --data_dir=DIR"
  if TFDS_DATASETS[name].manual_download:
    steps = (
      f"ImageNet is a manual download: register at https://image-net.org, put "
      f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in DIR/downloads/manual/, "
      f"then run `{build}` (tfds build needs TensorFlow installed on that machine)"
    )
  else:
    steps = (
      f"on a machine with internet (and TensorFlow, which tfds build needs) run "
      f"`{build}`, then copy DIR to this machine"
    )
  return (
    f"dataset {name!r} is not prepared in array_record format under data_dir={where!r}. "
    f"To get it: {steps}; then pass --config.data.data_dir=DIR (or set TFDS_DATA_DIR=DIR). "
    f"Offline alternatives: 'digits' (embedded scikit-learn digits; 'digits_a' / "
    f"'digits_b' for a two-task pair) or 'array_dir:PATH' (IDX or NumPy files)."
  )


def open_data_source(name: str, tfds_split: str, data_dir: Optional[str]) -> Sequence[dict]:
  """`tfds.data_source` of a prepared dataset, never downloading; DatasetUnavailableError else."""
  try:
    return tfds.data_source(
      name,
      split=tfds_split,
      data_dir=data_dir,
      download=False,
      builder_kwargs={"file_format": "array_record"},
    )
  except (KeyError, FileNotFoundError, NotImplementedError) as error:
    # tfds reports a missing dataset as "splits is empty" (KeyError) or, for data prepared
    # as tfrecord, as an unsupported file format; both mean "prepare it as array_record".
    raise DatasetUnavailableError(
      f"{_how_to_prepare(name, data_dir)} (tfds said: {error})"
    ) from error


class TfdsSource:
  """One split of a tfds dataset; `get` decodes the requested examples on demand."""

  def __init__(self, name: str, split: str, *, data_dir: Optional[str] = None):
    if name not in TFDS_DATASETS:
      raise ValueError(f"tfds dataset name must be one of {tuple(TFDS_DATASETS)}; got {name!r}")
    dataset = TFDS_DATASETS[name]
    if split not in dataset.splits:
      raise ValueError(f"split of {name!r} must be one of {tuple(dataset.splits)}; got {split!r}")
    self.info = SourceInfo(
      name=name,
      split=split,
      num_classes=dataset.num_classes,
      image_shape=dataset.image_shape,
      mean=dataset.mean,
      std=dataset.std,
      horizontal_flip_preserves_label=True,
    )
    self._examples = open_data_source(dataset.tfds_name, dataset.splits[split], data_dir)

  def __len__(self) -> int:
    return len(self._examples)

  def get(self, indices: Sequence[int]):
    indices = check_indices(indices, len(self), self.info.name)
    examples = [self._examples[int(i)] for i in indices]
    images = [np.asarray(example["image"], dtype=np.uint8) for example in examples]
    labels = np.array([int(example["label"]) for example in examples], dtype=np.int64)
    if not self.info.variable_size:
      images = np.stack(images) if images else np.zeros((0, *self.info.image_shape), np.uint8)
    return images, labels
