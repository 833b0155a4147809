"""tfds sources on `tfds.testing.mock_data` (which patches `as_data_source`, so
`tfds.data_source` works under it), and the error for a dataset that is not prepared."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from skillearn_jax.data.augment import eval_augment, train_augment
from skillearn_jax.data.stream import BatchStream
from skillearn_jax.data.tfds_source import DatasetUnavailableError, TfdsSource


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_on_mock_data(tmp_path, name, classes):
  with tfds.testing.mock_data(num_examples=12):
    source = TfdsSource(name, "train", data_dir=str(tmp_path))
    assert len(source) == 12
    assert source.info.num_classes == classes and source.info.image_shape == (32, 32, 3)
    images, labels = source.get([3, 0, 3])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[0], images[2]) and labels[0] == labels[2]
    assert labels.min() >= 0 and labels.max() < classes
    stream = BatchStream(source, np.arange(12), 4, seed=0, augment=train_augment(source.info))
    batch = stream.batch_at(1)
    assert batch["image"].shape == (4, 32, 32, 3)
    assert np.array_equal(batch["image"], stream.batch_at(1)["image"])


def test_cifar10_published_normalization_constants():
  with tfds.testing.mock_data(num_examples=1):
    info = TfdsSource("cifar10", "test").info
  assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)
  assert info.horizontal_flip_preserves_label


def test_imagenet_decodes_variable_sizes_and_crops_to_a_fixed_size():
  with tfds.testing.mock_data(num_examples=5):
    source = TfdsSource("imagenet2012", "test")  # tfds 'validation'
    images, labels = source.get([0, 1, 2])
    assert isinstance(images, list) and all(i.ndim == 3 and i.shape[2] == 3 for i in images)
    assert len({i.shape for i in images}) > 1  # mock images differ in size
    assert source.info.num_classes == 1000
    rng = np.random.default_rng(0)
    train = train_augment(source.info, image_size=16)(images, rng)
    evaluate = eval_augment(source.info, image_size=16, resize_size=20)(images, rng)
    assert train.shape == evaluate.shape == (3, 16, 16, 3)


def test_missing_dataset_says_how_to_get_it_and_names_digits(tmp_path):
  with pytest.raises(DatasetUnavailableError) as caught:
    TfdsSource("cifar10", "train", data_dir=str(tmp_path))
  message = str(caught.value)
  assert "tfds build cifar10 --file_format=array_record" in message
  assert (
    str(tmp_path) in message and "--config.data.data_dir=DIR" in message and "'digits'" in message
  )
  assert isinstance(caught.value, FileNotFoundError)


def test_missing_imagenet_explains_the_manual_download(tmp_path):
  with pytest.raises(DatasetUnavailableError, match="ILSVRC2012_img_train.tar"):
    TfdsSource("imagenet2012", "train", data_dir=str(tmp_path))


def test_unknown_tfds_name_or_split_names_the_allowed_values():
  with pytest.raises(ValueError, match="'cifar10', 'cifar100', 'imagenet2012'"):
    TfdsSource("svhn_cropped", "train")
  with pytest.raises(ValueError, match=r"split of 'cifar10' must be one of \('train', 'test'\)"):
    TfdsSource("cifar10", "validation")
