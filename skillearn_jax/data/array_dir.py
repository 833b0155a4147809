"""Sources read from a directory of IDX files or NumPy arrays (`array_dir:PATH` datasets).

Directory convention: each split is one pair of files named by a stem; split 'train' uses stem
`train`, split 'test' uses stem `test` or `t10k` (the MNIST / Fashion-MNIST names), and split
'all' uses no stem (for a directory that is one unsplit set). For stem S the pair is one of
  * IDX:  `S-images-idx3-ubyte` + `S-labels-idx1-ubyte` (idx4 images for colour; either file
          may end in `.gz`), e.g. MNIST's `t10k-images-idx3-ubyte.gz`;
  * NPY:  `S-images.npy` + `S-labels.npy`;
  * NPZ:  `S.npz` holding arrays `images` and `labels`;
and without a stem: `images-idx3-ubyte`, `images.npy` + `labels.npy`, or `data.npz`.
Images are NHW (one channel added) or NHWC, uint8 on 0..255 or float in [0, 1]; labels are
integers 0..K-1. `num_classes` is 1 + the largest label over every split in the directory and
the normalization mean/std come from the 'train' split (else 'all', else 'test'), so all splits
of one directory share them. Horizontal flips are assumed to change the label (digit-like data).
"""

from __future__ import annotations

import functools
import gzip
import os
from typing import Union

import numpy as np

from skillearn_jax.data.sources import ArraySource, SourceInfo, channel_stats
from skillearn_jax.data.tfds_source import DatasetUnavailableError

PREFIX = "array_dir:"
SPLIT_STEMS = {"train": ("train",), "test": ("test", "t10k"), "all": ("",)}
STATS_SPLIT_ORDER = ("train", "all", "test")
# IDX type codes (http://yann.lecun.com/exdb/mnist/): all multi-byte data is big-endian.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"

PathLike = Union[str, os.PathLike]


def read_idx(path: PathLike) -> np.ndarray:
  """Parse one IDX file (gzip-compressed or not) into an array of its declared type and shape."""
  with open(path, "rb") as handle:
    raw = handle.read()
  if raw[:2] == GZIP_MAGIC:
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
    raise ValueError(
      f"{path} is not an IDX file: header must be 0x00 0x00 <type code in "
      f"{sorted(IDX_DTYPES)}> <ndim>; got {raw[:4].hex()}"
    )
  dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(
      f"{path}: header declares shape {shape} ({expected} bytes) but the file has {len(raw)} bytes"
    )
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def _stemmed(stem: str, name: str) -> str:
  return f"{stem}-{name}" if stem else name


def _existing(directory: str, name: str) -> list[str]:
  return [
    p
    for p in (os.path.join(directory, name), os.path.join(directory, name + ".gz"))
    if os.path.isfile(p)
  ]


def _candidates(directory: str, stem: str) -> list[tuple[str, ...]]:
  """Every complete file set for one stem (several means the directory is ambiguous)."""
  found = []
  labels_idx = _existing(directory, _stemmed(stem, "labels-idx1-ubyte"))
  for images_name in ("images-idx3-ubyte", "images-idx4-ubyte"):
    images_idx = _existing(directory, _stemmed(stem, images_name))
    found += [(i, l) for i in images_idx for l in labels_idx]
  npy = tuple(
    os.path.join(directory, _stemmed(stem, f"{kind}.npy")) for kind in ("images", "labels")
  )
  if all(os.path.isfile(p) for p in npy):
    found.append(npy)
  npz = os.path.join(directory, f"{stem or 'data'}.npz")
  if os.path.isfile(npz):
    found.append((npz,))
  return found


def split_files(directory: PathLike, split: str) -> tuple[str, ...]:
  """The file set holding `split` in `directory`: (images, labels) or (npz,)."""
  directory = os.fspath(directory)
  if split not in SPLIT_STEMS:
    raise ValueError(f"split of array_dir must be one of {tuple(SPLIT_STEMS)}; got {split!r}")
  if not os.path.isdir(directory):
    raise DatasetUnavailableError(
      f"array_dir:{directory}: not a directory; give a directory of IDX or .npy files"
    )
  found = [files for stem in SPLIT_STEMS[split] for files in _candidates(directory, stem)]
  if not found:
    raise DatasetUnavailableError(
      f"no {split!r} split in array_dir {directory!r} (files: "
      f"{sorted(os.listdir(directory))}); splits found: {available_splits(directory)}. "
      "See skillearn_jax.data.array_dir for the file naming convention."
    )
  if len(found) > 1:
    raise ValueError(
      f"array_dir {directory!r} holds several file sets for split {split!r}: "
      f"{found}; keep exactly one"
    )
  return found[0]


def available_splits(directory: PathLike) -> tuple[str, ...]:
  directory = os.fspath(directory)
  return tuple(
    split
    for split, stems in SPLIT_STEMS.items()
    if any(_candidates(directory, stem) for stem in stems)
  )


def _load_pair(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
  if len(files) == 1:
    with np.load(files[0]) as archive:
      missing = {"images", "labels"} - set(archive.files)
      if missing:
        raise ValueError(
          f"{files[0]} lacks arrays {sorted(missing)}; it must hold "
          f"'images' and 'labels' (has {archive.files})"
        )
      images, labels = archive["images"], archive["labels"]
  else:
    images, labels = [np.load(p) if p.endswith(".npy") else read_idx(p) for p in files]
  return _checked_images(images, files[0]), _checked_labels(labels, files[-1])


def _checked_images(images: np.ndarray, path: str) -> np.ndarray:
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"images in {path} must be NHW or NHWC; got shape {images.shape}")
  if np.issubdtype(images.dtype, np.floating):
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
      raise ValueError(
        f"float images in {path} must lie in [0, 1]; got [{images.min()}, {images.max()}]"
      )
    return images.astype(np.float32)
  if images.dtype != np.uint8:
    raise ValueError(
      f"images in {path} have dtype {images.dtype}; allowed: uint8 (0..255) or float (0..1)"
    )
  return images


def _checked_labels(labels: np.ndarray, path: str) -> np.ndarray:
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
      f"labels in {path} must be a 1-D integer array; got shape "
      f"{labels.shape}, dtype {labels.dtype}"
    )
  if labels.size and labels.min() < 0:
    raise ValueError(f"labels in {path} must be >= 0; got min {labels.min()}")
  return labels.astype(np.int64)


def _load_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  files = split_files(directory, split)
  return _load_files(files, tuple(os.stat(path).st_mtime_ns for path in files))


@functools.lru_cache(maxsize=8)
def _load_files(files: tuple[str, ...], mtimes: tuple[int, ...]):
  del mtimes  # Part of the cache key only: a rewritten file is read again.
  images, labels = _load_pair(files)
  if len(images) != len(labels):
    raise ValueError(f"{files}: {len(images)} images but {len(labels)} labels; they must match")
  images.flags.writeable = False
  return images, labels


def array_dir_source(directory: PathLike, split: str) -> ArraySource:
  """The `split` ('train', 'test' or 'all') of an array directory as an ArraySource."""
  directory = os.path.abspath(os.fspath(directory))
  images, labels = _load_split(directory, split)
  splits = available_splits(directory)
  num_classes = 1 + max(int(_load_split(directory, s)[1].max(initial=-1)) for s in splits)
  stats_split = next(s for s in STATS_SPLIT_ORDER if s in splits)
  mean, std = channel_stats(_load_split(directory, stats_split)[0])
  info = SourceInfo(
    name=PREFIX + directory,
    split=split,
    num_classes=num_classes,
    image_shape=images.shape[1:],
    mean=mean,
    std=std,
    horizontal_flip_preserves_label=False,
  )
  return ArraySource(info, images, labels)
