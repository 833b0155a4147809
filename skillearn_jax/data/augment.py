"""Image augmentation in NumPy/PIL, deterministic given a `numpy.random.Generator`.

Batch transforms for fixed-size images follow the DARTS CIFAR recipe in its order: random crop
after zero padding, horizontal flip, per-channel normalization, then cutout (so cutout writes
zeros in normalized space, i.e. the mean colour). ImageNet-style transforms work per image with
PIL on variable-size uint8 images: random resized crop (torchvision's sampling rule) + flip +
optional colour jitter for training, resize of the shorter side to 256 then a centre crop of
224 for evaluation. Every pipeline is a frozen dataclass called as `pipeline(images, rng)` and
returns float32 NHWC; `train_augment` / `eval_augment` pick the defaults from a SourceInfo.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from skillearn_jax.data.sources import Images, SourceInfo, to_unit_float

# DARTS ImageNet training used ColorJitter(brightness, contrast, saturation, hue) with these.
DARTS_IMAGENET_COLOR_JITTER = (0.4, 0.4, 0.4, 0.2)


def random_crop_with_padding(images: np.ndarray, padding: int, rng: np.random.Generator):
  """Zero-pad each NHWC image by `padding` pixels, then crop a random window of the input size."""
  if padding < 0:
    raise ValueError(f"crop padding must be >= 0; got {padding}")
  if padding == 0:
    return images
  count, height, width = images.shape[:3]
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  tops, lefts = rng.integers(0, 2 * padding + 1, size=(2, count))
  return np.stack(
    [padded[n, t : t + height, l : l + width] for n, (t, l) in enumerate(zip(tops, lefts))]
  )


def random_horizontal_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirror each NHWC image left-right with probability 1/2."""
  flip = rng.random(len(images)) < 0.5
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """(image - mean) / std per channel, float32."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  if mean.shape != (images.shape[-1],) or std.shape != mean.shape:
    raise ValueError(
      f"mean/std must have one entry per channel ({images.shape[-1]}); got "
      f"mean={tuple(mean)}, std={tuple(std)}"
    )
  return ((images - mean) / std).astype(np.float32)


def cutout(images: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
  """Zero one length x length square per image, centred uniformly, clipped at the borders.

  Same rule as DARTS' Cutout: rows [y - length//2, y + length//2) clipped to the image, so an
  odd length cuts an even square (length - 1) when the square is not clipped.
  """
  if length < 0:
    raise ValueError(f"cutout length must be >= 0; got {length}")
  if length == 0:
    return images
  count, height, width = images.shape[:3]
  centre_y = rng.integers(0, height, size=count)
  centre_x = rng.integers(0, width, size=count)
  half = length // 2
  rows = np.arange(height)[None, :]
  cols = np.arange(width)[None, :]
  in_rows = (rows >= (centre_y - half)[:, None]) & (rows < (centre_y + half)[:, None])
  in_cols = (cols >= (centre_x - half)[:, None]) & (cols < (centre_x + half)[:, None])
  square = in_rows[:, :, None] & in_cols[:, None, :]
  return np.where(square[..., None], np.float32(0), images).astype(images.dtype)


def random_resized_crop(
  image: np.ndarray, size: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
  """torchvision's RandomResizedCrop on one uint8 HWC image: area/aspect sampling, 10 tries."""
  height, width = image.shape[:2]
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    crop_w = int(round(math.sqrt(target_area * aspect)))
    crop_h = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      top = int(rng.integers(0, height - crop_h + 1))
      left = int(rng.integers(0, width - crop_w + 1))
      break
  else:  # Fall back to the whole image clamped to the allowed aspect ratios, centred.
    in_ratio = width / height
    crop_w, crop_h = width, height
    if in_ratio < min(ratio):
      crop_h = int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
      crop_w = int(round(height * max(ratio)))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
  box = (left, top, left + crop_w, top + crop_h)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box))


def resize_center_crop(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
  """Resize the shorter side of one uint8 HWC image to `resize`, then take the centre crop."""
  if crop > resize:
    raise ValueError(f"crop ({crop}) must be <= resize ({resize})")
  height, width = image.shape[:2]
  if height <= width:
    new_h, new_w = resize, int(resize * width / height)
  else:
    new_h, new_w = int(resize * height / width), resize
  resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
  top = int(round((new_h - crop) / 2.0))
  left = int(round((new_w - crop) / 2.0))
  return resized[top : top + crop, left : left + crop]


def color_jitter(
  image: np.ndarray, strengths: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
  """Brightness, contrast, saturation (factors in [1-s, 1+s]) and hue (shift in [-h, h] turns),
  applied in a random order to one uint8 RGB image, as torchvision's ColorJitter does."""
  brightness, contrast, saturation, hue = strengths
  if not 0.0 <= hue <= 0.5:
    raise ValueError(f"color jitter hue must lie in [0, 0.5]; got {hue}")
  picture = Image.fromarray(image)
  enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  for op in rng.permutation(4):
    if op < 3:
      strength = (brightness, contrast, saturation)[op]
      if strength > 0:
        factor = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)
        picture = enhancers[op](picture).enhance(factor)
    elif hue > 0:
      shift = int(round(rng.uniform(-hue, hue) * 255))
      h, s, v = picture.convert("HSV").split()
      h = h.point(lambda value: (value + shift) % 256)
      picture = Image.merge("HSV", (h, s, v)).convert("RGB")
  return np.asarray(picture)


@dataclasses.dataclass(frozen=True)
class ArrayAugment:
  """Fixed-size images: crop with padding, flip, normalize, cutout (each off when 0/False)."""

  mean: tuple
  std: tuple
  crop_padding: int = 0
  horizontal_flip: bool = False
  cutout_length: int = 0

  def __call__(self, images: Images, rng: np.random.Generator) -> np.ndarray:
    batch = to_unit_float(np.asarray(images))
    batch = random_crop_with_padding(batch, self.crop_padding, rng)
    if self.horizontal_flip:
      batch = random_horizontal_flip(batch, rng)
    batch = normalize(batch, self.mean, self.std)
    return cutout(batch, self.cutout_length, rng)


@dataclasses.dataclass(frozen=True)
class ImagenetAugment:
  """Variable-size images: random resized crop + flip (+ jitter) to train, resize + centre crop
  to evaluate; then normalize."""

  mean: tuple
  std: tuple
  training: bool
  image_size: int = 224
  resize_size: int = 256
  horizontal_flip: bool = True
  color_jitter: Optional[tuple] = None

  def __call__(self, images: Images, rng: np.random.Generator) -> np.ndarray:
    crops = []
    for image in images:
      if self.training:
        image = random_resized_crop(image, self.image_size, rng)
        if self.color_jitter is not None:
          image = color_jitter(image, self.color_jitter, rng)
      else:
        image = resize_center_crop(image, self.resize_size, self.image_size)
      crops.append(image)
    batch = to_unit_float(np.stack(crops))
    if self.training and self.horizontal_flip:
      batch = random_horizontal_flip(batch, rng)
    return normalize(batch, self.mean, self.std)


def default_crop_padding(image_height: int) -> int:
  """Padding scaled to the image: 4 px for 32x32 CIFAR (DARTS), 3 for 28x28, 1 for 8x8."""
  return max(1, image_height // 8)


def train_augment(
  info: SourceInfo,
  *,
  crop_padding: Optional[int] = None,
  horizontal_flip: Optional[bool] = None,
  cutout_length: int = 0,
  color_jitter_strengths: Optional[tuple] = None,
  image_size: int = 224,
):
  """The training pipeline for a source; None picks the source's default (flip only where it
  preserves the label, padding scaled to the image size). cutout is for evaluation runs."""
  flip = info.horizontal_flip_preserves_label if horizontal_flip is None else horizontal_flip
  if info.variable_size:
    return ImagenetAugment(
      info.mean,
      info.std,
      training=True,
      image_size=image_size,
      horizontal_flip=flip,
      color_jitter=color_jitter_strengths,
    )
  padding = default_crop_padding(info.image_shape[0]) if crop_padding is None else crop_padding
  return ArrayAugment(
    info.mean, info.std, crop_padding=padding, horizontal_flip=flip, cutout_length=cutout_length
  )


def eval_augment(info: SourceInfo, *, image_size: int = 224, resize_size: int = 256):
  """The evaluation transform for a source: normalization only, or resize + centre crop."""
  if info.variable_size:
    return ImagenetAugment(
      info.mean, info.std, training=False, image_size=image_size, resize_size=resize_size
    )
  return ArrayAugment(info.mean, info.std)
