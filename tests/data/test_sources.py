"""The source contract: pixel scales, channel statistics, ArraySource checks."""

import numpy as np
import pytest

from skillearn_jax.data.sources import ArraySource, SourceInfo, channel_stats, to_unit_float


def _info(num_classes=3, shape=(2, 2, 1)):
  return SourceInfo("toy", "train", num_classes, shape, (0.5,), (0.5,), False)


def test_to_unit_float_scales_uint8_and_keeps_floats():
  np.testing.assert_allclose(to_unit_float(np.array([0, 51, 255], np.uint8)), [0.0, 0.2, 1.0])
  floats = np.array([0.25], np.float64)
  assert to_unit_float(floats).dtype == np.float32
  with pytest.raises(ValueError, match="uint8"):
    to_unit_float(np.array([1], np.int32))


def test_channel_stats_hand_computed():
  images = np.zeros((2, 1, 1, 2), np.uint8)
  images[0, 0, 0] = (255, 0)
  images[1, 0, 0] = (0, 0)
  assert channel_stats(images) == ((0.5, 0.0), (0.5, 0.0))


def test_array_source_get_and_checks():
  images = np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2, 1)
  source = ArraySource(_info(), images, np.array([2, 0, 1]))
  batch_images, batch_labels = source.get([2, 2, 0])
  assert np.array_equal(batch_images, images[[2, 2, 0]])
  assert np.array_equal(batch_labels, [1, 1, 2])
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    source.get([3])
  with pytest.raises(ValueError, match="num_classes=3"):
    ArraySource(_info(), images, np.array([0, 1, 3]))
  with pytest.raises(ValueError, match="3 images but 2 labels"):
    ArraySource(_info(), images, np.array([0, 1]))
  with pytest.raises(ValueError, match="NHWC"):
    ArraySource(_info(), images[..., 0], np.array([0, 1, 2]))


def test_variable_size_flag():
  assert SourceInfo("x", "train", 2, (None, None, 3), (0,) * 3, (1,) * 3, True).variable_size
  assert not _info().variable_size
