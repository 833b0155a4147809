"""Augmentation numerics: crops stay inside the padded image, flips mirror, normalization
standardizes, cutout zeroes one clipped square, ImageNet crops have the right size."""

import numpy as np
import pytest
from PIL import Image

from skillearn_jax.data import augment
from skillearn_jax.data.sources import SourceInfo


def _distinct_images(count, height=6, width=6, channels=2):
  # Values 1.. so padding zeros are recognisable and every pixel is unique.
  size = count * height * width * channels
  return (np.arange(1, size + 1, dtype=np.float32) / size).reshape(count, height, width, channels)


def test_random_crop_is_a_window_of_the_zero_padded_image():
  images = _distinct_images(64)
  padding = 2
  out = augment.random_crop_with_padding(images, padding, np.random.default_rng(0))
  assert out.shape == images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = set()
  for n in range(len(images)):
    matches = [
      (t, l)
      for t in range(2 * padding + 1)
      for l in range(2 * padding + 1)
      if np.array_equal(out[n], padded[n, t : t + 6, l : l + 6])
    ]
    assert len(matches) == 1
    offsets.add(matches[0])
  # 64 uniform draws over the 25 offsets hit about 23 of them; a too-narrow range would not.
  assert len(offsets) >= 20


def test_random_crop_without_padding_is_identity():
  images = _distinct_images(3)
  assert np.array_equal(
    augment.random_crop_with_padding(images, 0, np.random.default_rng(0)), images
  )


def test_horizontal_flip_mirrors_about_half_of_the_images():
  images = _distinct_images(200)
  out = augment.random_horizontal_flip(images, np.random.default_rng(1))
  flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)])
  kept = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
  assert np.all(flipped ^ kept)
  assert 70 < flipped.sum() < 130


def test_normalize_with_channel_stats_gives_zero_mean_unit_std():
  rng = np.random.default_rng(2)
  images = rng.uniform(size=(50, 4, 4, 3)).astype(np.float32) * [0.2, 0.5, 1.0]
  pixels = images.reshape(-1, 3)
  out = augment.normalize(images, pixels.mean(0), pixels.std(0))
  np.testing.assert_allclose(out.reshape(-1, 3).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.reshape(-1, 3).std(0), 1.0, atol=1e-5)


def test_normalize_hand_computed_value_and_channel_check():
  out = augment.normalize(np.full((1, 1, 1, 2), 0.5, np.float32), (0.25, 0.5), (0.5, 0.1))
  np.testing.assert_allclose(out.ravel(), [0.5, 0.0])
  with pytest.raises(ValueError, match="one entry per channel"):
    augment.normalize(np.zeros((1, 1, 1, 3), np.float32), (0.5,), (0.5,))


def test_cutout_zeroes_one_clipped_square_and_nothing_else():
  length, size = 4, 10
  images = np.ones((300, size, size, 2), np.float32)
  out = augment.cutout(images, length, np.random.default_rng(3))
  assert np.array_equal(out[..., 0], out[..., 1])  # same square on every channel
  full_squares = 0
  for image in out[..., 0]:
    rows = np.flatnonzero((image == 0).any(axis=1))
    cols = np.flatnonzero((image == 0).any(axis=0))
    assert len(rows) and len(cols)  # centres lie inside, so something is always cut
    # The zeros form exactly the rectangle spanned by their rows and columns.
    assert (image == 0).sum() == len(rows) * len(cols)
    assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
    assert len(rows) <= length and len(cols) <= length
    full_squares += len(rows) == length and len(cols) == length
  assert full_squares > 50  # unclipped squares are exactly length x length


def test_array_augment_is_deterministic_given_the_generator():
  pipeline = augment.ArrayAugment(
    (0.5,), (0.25,), crop_padding=1, horizontal_flip=True, cutout_length=2
  )
  images = (np.arange(4 * 8 * 8) % 256).astype(np.uint8).reshape(4, 8, 8, 1)
  first = pipeline(images, np.random.default_rng(7))
  assert first.dtype == np.float32 and first.shape == images.shape
  assert np.array_equal(first, pipeline(images, np.random.default_rng(7)))
  assert not np.array_equal(first, pipeline(images, np.random.default_rng(8)))


def test_random_resized_crop_and_center_crop_sizes():
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, size=(40, 70, 3), dtype=np.uint8)
  assert augment.random_resized_crop(image, 16, rng).shape == (16, 16, 3)
  # Eval: shorter side 40 -> 20, longer 70 -> 35, centre crop 16 starts at (2, 10).
  out = augment.resize_center_crop(image, resize=20, crop=16)
  assert out.shape == (16, 16, 3)
  resized = np.asarray(Image.fromarray(image).resize((35, 20), Image.BILINEAR))
  assert np.array_equal(out, resized[2:18, 10:26])


def test_random_resized_crop_of_full_scale_and_square_ratio_is_a_plain_resize():
  image = np.random.default_rng(5).integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
  out = augment.random_resized_crop(
    image, 12, np.random.default_rng(0), scale=(1.0, 1.0), ratio=(1.0, 1.0)
  )
  assert np.array_equal(out, image)


def test_color_jitter_keeps_shape_and_zero_strength_is_identity():
  image = np.random.default_rng(6).integers(0, 256, size=(9, 9, 3), dtype=np.uint8)
  rng = np.random.default_rng(0)
  assert np.array_equal(augment.color_jitter(image, (0, 0, 0, 0), rng), image)
  jittered = augment.color_jitter(image, augment.DARTS_IMAGENET_COLOR_JITTER, rng)
  assert jittered.shape == image.shape and not np.array_equal(jittered, image)


def _info(shape, flip):
  return SourceInfo("x", "train", 10, shape, (0.5,) * shape[-1], (0.25,) * shape[-1], flip)


def test_train_augment_defaults_follow_the_source():
  cifar = augment.train_augment(_info((32, 32, 3), True))
  assert (cifar.crop_padding, cifar.horizontal_flip, cifar.cutout_length) == (4, True, 0)
  tiny = augment.train_augment(_info((8, 8, 1), False), cutout_length=3)
  assert (tiny.crop_padding, tiny.horizontal_flip, tiny.cutout_length) == (1, False, 3)
  imagenet = augment.train_augment(_info((None, None, 3), True), image_size=32)
  assert isinstance(imagenet, augment.ImagenetAugment) and imagenet.training
  images = [np.zeros((20, 30, 3), np.uint8), np.zeros((50, 40, 3), np.uint8)]
  assert imagenet(images, np.random.default_rng(0)).shape == (2, 32, 32, 3)
  evaluate = augment.eval_augment(_info((None, None, 3), True), image_size=32, resize_size=36)
  assert evaluate(images, np.random.default_rng(0)).shape == (2, 32, 32, 3)


def test_bad_parameters_name_the_field():
  with pytest.raises(ValueError, match="crop padding"):
    augment.random_crop_with_padding(np.zeros((1, 4, 4, 1)), -1, np.random.default_rng(0))
  with pytest.raises(ValueError, match="cutout length"):
    augment.cutout(np.zeros((1, 4, 4, 1)), -2, np.random.default_rng(0))
  with pytest.raises(ValueError, match="crop"):
    augment.resize_center_crop(np.zeros((4, 4, 3), np.uint8), resize=8, crop=10)
