"""Index splits: the DARTS search split (25k / 25k on CIFAR) and seeded holdouts."""

import numpy as np
import pytest

from skillearn_jax.data.splits import holdout_split, search_split


def test_search_split_of_cifar_train_is_25k_25k_in_order():
  weights, architecture = search_split(50_000, 0.5)
  assert (weights[0], weights[-1], len(weights)) == (0, 24_999, 25_000)
  assert (architecture[0], architecture[-1], len(architecture)) == (25_000, 49_999, 25_000)


def test_search_split_floors_the_cut():
  weights, architecture = search_split(7, 0.5)
  assert list(weights) == [0, 1, 2] and list(architecture) == [3, 4, 5, 6]


@pytest.mark.parametrize("portion", [0.0, 1.0, -0.1, 1.5])
def test_search_split_rejects_portions_outside_the_open_unit_interval(portion):
  with pytest.raises(ValueError, match="train_portion"):
    search_split(10, portion)


def test_search_split_rejects_an_empty_half():
  with pytest.raises(ValueError, match="empty half"):
    search_split(3, 0.1)


def test_holdout_split_is_a_seeded_partition():
  keep, holdout = holdout_split(20, 5, seed=1)
  assert len(keep) == 15 and len(holdout) == 5
  assert sorted(np.concatenate([keep, holdout])) == list(range(20))
  again_keep, _ = holdout_split(20, 5, seed=1)
  other_keep, _ = holdout_split(20, 5, seed=2)
  assert np.array_equal(keep, again_keep) and not np.array_equal(keep, other_keep)
  with pytest.raises(ValueError, match="num_holdout"):
    holdout_split(20, 20, seed=0)
