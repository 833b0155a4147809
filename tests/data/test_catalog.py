"""The entry point: names dispatch to the right source, search and evaluation layouts."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from skillearn_jax.data.catalog import DATASET_NAMES, build_source, evaluation_data, search_data
from skillearn_jax.data.tfds_source import DatasetUnavailableError


def test_digits_search_layout_halves_the_training_split():
  data = search_data("digits")
  assert len(data.source) == 1437 and data.source.info.split == "train"
  assert (len(data.weight_indices), len(data.architecture_indices)) == (718, 719)
  assert data.weight_indices[-1] + 1 == data.architecture_indices[0]
  quarter = search_data("digits_a", train_portion=0.25)
  assert len(quarter.weight_indices) == int(0.25 * len(quarter.source))


def test_evaluation_layout_is_full_train_and_test():
  data = evaluation_data("digits_b")
  assert (len(data.train), len(data.test)) == (719, 180)
  assert data.train.info.num_classes == data.test.info.num_classes == 5


def test_cifar_search_layout_on_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=10):
    data = search_data("cifar100", data_dir=str(tmp_path))
  assert list(data.weight_indices) == [0, 1, 2, 3, 4]
  assert list(data.architecture_indices) == [5, 6, 7, 8, 9]


def test_array_dir_name_reads_the_directory(tmp_path):
  np.savez(tmp_path / "train.npz", images=np.zeros((4, 3, 3), np.uint8), labels=[0, 1, 2, 1])
  source = build_source(f"array_dir:{tmp_path}", "train")
  assert len(source) == 4 and source.info.num_classes == 3


def test_bad_names_list_the_allowed_values(tmp_path):
  with pytest.raises(ValueError, match="array_dir:PATH"):
    build_source("cifar-10", "train")
  assert "digits" in DATASET_NAMES
  with pytest.raises(ValueError, match="names no directory"):
    build_source("array_dir:", "train")
  with pytest.raises(DatasetUnavailableError, match="digits"):
    evaluation_data("cifar10", data_dir=str(tmp_path))
