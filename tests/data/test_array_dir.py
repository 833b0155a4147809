"""Array directories: IDX parsing (plain and gzip) on hand-written bytes, the NPY / NPZ naming
convention, split discovery and its errors; the real MNIST test set when it is available."""

import gzip
import os
import struct

import numpy as np
import pytest

from skillearn_jax.data.array_dir import array_dir_source, read_idx, split_files

MNIST_DIR = "/work/shared/data/mnist_t10k"


def _idx_bytes(array, type_code):
  header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
  header += struct.pack(f">{array.ndim}I", *array.shape)
  big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
  return header + array.astype(big_endian).tobytes()


def _write(path, payload, compress=False):
  with open(path, "wb") as handle:
    handle.write(gzip.compress(payload) if compress else payload)


def test_read_idx_parses_hand_written_headers(tmp_path):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  _write(tmp_path / "a", _idx_bytes(images, 0x08))
  _write(tmp_path / "b.gz", _idx_bytes(images, 0x08), compress=True)
  shorts = np.array([-2, 300, 7], dtype=np.int16)
  _write(tmp_path / "c", _idx_bytes(shorts, 0x0B))
  floats = np.array([[0.5, -1.25]], dtype=np.float32)
  _write(tmp_path / "d", _idx_bytes(floats, 0x0D))
  assert np.array_equal(read_idx(tmp_path / "a"), images)
  assert read_idx(tmp_path / "a").dtype == np.uint8
  assert np.array_equal(read_idx(tmp_path / "b.gz"), images)
  assert np.array_equal(read_idx(tmp_path / "c"), shorts)
  assert np.array_equal(read_idx(tmp_path / "d"), floats)


def test_read_idx_rejects_bad_headers_and_truncated_data(tmp_path):
  _write(tmp_path / "bad", b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
  with pytest.raises(ValueError, match="not an IDX file"):
    read_idx(tmp_path / "bad")
  _write(tmp_path / "short", _idx_bytes(np.zeros(4, np.uint8), 0x08)[:-1])
  with pytest.raises(ValueError, match="header declares shape"):
    read_idx(tmp_path / "short")


def _write_mnist_style(directory, stem, images, labels, compress):
  suffix = ".gz" if compress else ""
  _write(directory / f"{stem}-images-idx3-ubyte{suffix}", _idx_bytes(images, 0x08), compress)
  _write(directory / f"{stem}-labels-idx1-ubyte{suffix}", _idx_bytes(labels, 0x08), compress)


def test_idx_directory_serves_train_and_t10k_as_test(tmp_path):
  rng = np.random.default_rng(0)
  train_images = rng.integers(0, 256, size=(6, 5, 5), dtype=np.uint8)
  train_labels = np.array([0, 1, 2, 0, 1, 2], np.uint8)
  test_images = rng.integers(0, 256, size=(3, 5, 5), dtype=np.uint8)
  test_labels = np.array([3, 0, 1], np.uint8)  # a class absent from train
  _write_mnist_style(tmp_path, "train", train_images, train_labels, compress=False)
  _write_mnist_style(tmp_path, "t10k", test_images, test_labels, compress=True)
  train = array_dir_source(tmp_path, "train")
  test = array_dir_source(tmp_path, "test")
  assert np.array_equal(train.images, train_images[..., None])
  assert np.array_equal(test.labels, test_labels)
  assert train.info.num_classes == test.info.num_classes == 4
  expected_mean = float(train_images.mean() / 255.0)
  assert train.info.mean == test.info.mean  # both from the train split
  assert train.info.mean[0] == pytest.approx(expected_mean)
  assert train.info.name == "array_dir:" + os.path.abspath(tmp_path)
  images, labels = test.get([2, 0])
  assert np.array_equal(images, test_images[[2, 0], ..., None])
  assert np.array_equal(labels, [1, 3])


def test_npy_and_npz_conventions(tmp_path):
  images = np.linspace(0, 1, 4 * 2 * 2 * 3, dtype=np.float32).reshape(4, 2, 2, 3)
  labels = np.array([1, 0, 1, 0])
  np.save(tmp_path / "train-images.npy", images)
  np.save(tmp_path / "train-labels.npy", labels)
  np.savez(tmp_path / "test.npz", images=(images * 255).astype(np.uint8), labels=labels)
  train = array_dir_source(tmp_path, "train")
  assert train.images.dtype == np.float32 and train.info.image_shape == (2, 2, 3)
  assert np.array_equal(train.images, images)
  assert array_dir_source(tmp_path, "test").images.dtype == np.uint8
  unsplit = tmp_path / "unsplit"
  unsplit.mkdir()
  np.save(unsplit / "images.npy", images[..., 0])
  np.save(unsplit / "labels.npy", labels)
  assert array_dir_source(unsplit, "all").info.image_shape == (2, 2, 1)
  other = tmp_path / "other"
  other.mkdir()
  np.savez(other / "data.npz", images=images, labels=labels)
  assert len(array_dir_source(other, "all")) == 4


def test_missing_ambiguous_and_malformed_directories_are_explained(tmp_path):
  np.savez(tmp_path / "train.npz", images=np.zeros((2, 2, 2), np.uint8), labels=[0, 1])
  with pytest.raises(FileNotFoundError, match=r"no 'test' split .* splits found: \('train',\)"):
    split_files(tmp_path, "test")
  with pytest.raises(ValueError, match="'train', 'test', 'all'"):
    split_files(tmp_path, "validation")
  np.save(tmp_path / "train-images.npy", np.zeros((2, 2, 2), np.uint8))
  np.save(tmp_path / "train-labels.npy", np.array([0, 1]))
  with pytest.raises(ValueError, match="several file sets"):
    split_files(tmp_path, "train")
  bad = tmp_path / "bad"
  bad.mkdir()
  np.savez(bad / "data.npz", images=np.zeros((2, 2, 2), np.int32), labels=[0, 1])
  with pytest.raises(ValueError, match="dtype int32"):
    array_dir_source(bad, "all")
  with pytest.raises(FileNotFoundError, match="not a directory"):
    split_files(tmp_path / "nowhere", "train")


@pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason="shared MNIST test set not present")
def test_real_mnist_test_set():
  source = array_dir_source(MNIST_DIR, "test")
  assert len(source) == 10_000 and source.info.image_shape == (28, 28, 1)
  assert source.info.num_classes == 10
  # Published per-class counts of the MNIST test set.
  assert list(np.bincount(source.labels)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
  # Commonly quoted MNIST test-set statistics.
  assert source.info.mean[0] == pytest.approx(0.1325, abs=1e-4)
  assert source.info.std[0] == pytest.approx(0.3105, abs=1e-4)
