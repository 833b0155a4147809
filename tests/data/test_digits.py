"""The embedded digits: published size and scale, a fixed train/test split, and two tasks
with disjoint images and label spaces of different size."""

import numpy as np
import pytest

from skillearn_jax.data import digits
from skillearn_jax.data.sources import channel_stats


def test_bundle_matches_the_published_dataset():
  images, labels = digits._bundled_digits()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
  assert images.min() == 0.0 and images.max() == 1.0  # 0..16 scaled by 1/16
  assert np.allclose(images * 16, np.round(images * 16))
  # The bundled file's class counts (scikit-learn documents ~180 images per class).
  assert list(np.bincount(labels)) == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_train_test_split_is_fixed_disjoint_and_complete():
  train = digits.digits_indices("digits", "train")
  test = digits.digits_indices("digits", "test")
  assert (len(train), len(test)) == (1437, 360)
  assert sorted(np.concatenate([train, test])) == list(range(1797))
  assert np.array_equal(train, digits.digits_indices("digits", "train"))


def test_two_tasks_have_disjoint_images_and_distinct_label_spaces():
  name_a, name_b = digits.interleaving_tasks()
  for split in digits.SPLITS:
    a, b = digits.digits_source(name_a, split), digits.digits_source(name_b, split)
    assert (a.info.num_classes, b.info.num_classes) == (10, 5)
    assert set(np.unique(a.labels)) == set(range(10))
    assert set(np.unique(b.labels)) == set(range(5))
    index_a = digits.digits_indices(name_a, split)
    index_b = digits.digits_indices(name_b, split)
    assert not set(index_a) & set(index_b)
    assert sorted(np.concatenate([index_a, index_b])) == sorted(
      digits.digits_indices("digits", split)
    )
    # No image is shared either (load_digits holds no duplicate images).
    flat_a = {image.tobytes() for image in a.images}
    assert not any(image.tobytes() in flat_a for image in b.images)


def test_task_b_labels_are_digit_mod_5():
  images, labels = digits._bundled_digits()
  index_b = digits.digits_indices("digits_b", "train")
  source = digits.digits_source("digits_b", "train")
  assert np.array_equal(source.labels, labels[index_b] % 5)
  assert np.array_equal(source.images, images[index_b])


def test_metadata_mean_std_normalize_the_whole_dataset():
  source = digits.digits_source("digits", "train")
  images, _ = digits._bundled_digits()
  assert (source.info.mean, source.info.std) == channel_stats(images)
  standardized = (images - source.info.mean[0]) / source.info.std[0]
  assert abs(standardized.mean()) < 1e-6 and abs(standardized.std() - 1) < 1e-6
  assert source.info.image_shape == (8, 8, 1)
  assert not source.info.horizontal_flip_preserves_label


def test_unknown_task_or_split_names_the_allowed_values():
  with pytest.raises(ValueError, match="digits_a"):
    digits.digits_source("digits_c", "train")
  with pytest.raises(ValueError, match="'train', 'test'"):
    digits.digits_source("digits", "validation")
