"""Batch streams: batches are pure functions of (seed, step), epochs permute every index
once, evaluation walks the split in order with a padded, masked last batch."""

import numpy as np
import pytest

from skillearn_jax.data.augment import ArrayAugment
from skillearn_jax.data.sources import ArraySource, SourceInfo
from skillearn_jax.data.stream import BatchStream, eval_batches


def _indexed_source(count=40):
  """Label i and a constant image of value i: batches reveal which examples they hold."""
  info = SourceInfo("indexed", "train", count, (4, 4, 1), (0.0,), (1.0,), False)
  images = np.broadcast_to(
    np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 4, 4, 1)
  ).copy()
  return ArraySource(info, images, np.arange(count))


AUGMENT = ArrayAugment((0.0,), (1.0,), crop_padding=1, horizontal_flip=True, cutout_length=2)


def test_same_seed_and_step_give_identical_batches_even_from_a_fresh_stream():
  source = _indexed_source()
  first = BatchStream(source, np.arange(40), 8, seed=3, augment=AUGMENT)
  again = BatchStream(source, np.arange(40), 8, seed=3, augment=AUGMENT)
  for step in (0, 7, 12, 5):  # out of order, across epochs: no iterator state
    a, b = first.batch_at(step), again.batch_at(step)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
  assert first.batch_at(2)["image"].dtype == np.float32
  assert first.batch_at(2)["label"].dtype == np.int32


def test_different_seeds_give_different_batches():
  source = _indexed_source()
  a = BatchStream(source, np.arange(40), 8, seed=0, augment=AUGMENT).batch_at(0)
  b = BatchStream(source, np.arange(40), 8, seed=1, augment=AUGMENT).batch_at(0)
  assert not np.array_equal(a["label"], b["label"])


def test_each_epoch_covers_every_index_once_in_a_new_order():
  source = _indexed_source(40)
  indices = np.arange(5, 37)  # a subset: only these may appear
  stream = BatchStream(source, indices, 8, seed=0, augment=AUGMENT)
  assert stream.steps_per_epoch == 4
  epochs = [
    np.concatenate([stream.batch_at(e * 4 + s)["label"] for s in range(4)]) for e in range(2)
  ]
  for labels in epochs:
    assert sorted(labels) == list(indices)
  assert not np.array_equal(epochs[0], epochs[1])


def test_drop_remainder_skips_at_most_batch_size_minus_one_examples():
  stream = BatchStream(_indexed_source(40), np.arange(30), 8, seed=0, augment=AUGMENT)
  assert stream.steps_per_epoch == 3
  seen = np.concatenate([stream.indices_at(s) for s in range(3)])
  assert len(set(seen)) == 24 and set(seen) <= set(range(30))


def test_batches_resume_at_a_step():
  stream = BatchStream(_indexed_source(), np.arange(40), 8, seed=5, augment=AUGMENT)
  resumed = stream.batches(start_step=6)
  for step in (6, 7, 8):
    assert np.array_equal(next(resumed)["image"], stream.batch_at(step)["image"])


def test_bad_stream_arguments_name_the_field():
  source = _indexed_source(10)
  with pytest.raises(ValueError, match="batch_size"):
    BatchStream(source, np.arange(10), 11, seed=0, augment=AUGMENT)
  with pytest.raises(ValueError, match="seed"):
    BatchStream(source, np.arange(10), 2, seed=-1, augment=AUGMENT)
  with pytest.raises(ValueError, match="indices"):
    BatchStream(source, [0, 10], 1, seed=0, augment=AUGMENT)
  with pytest.raises(ValueError, match="step"):
    BatchStream(source, np.arange(10), 2, seed=0, augment=AUGMENT).batch_at(-1)


def test_eval_batches_are_in_order_with_a_masked_padded_tail():
  source = _indexed_source(40)
  identity = ArrayAugment((0.0,), (1.0,))
  batches = list(eval_batches(source, np.arange(3, 20), 8, identity))
  assert [b["image"].shape[0] for b in batches] == [8, 8, 8]
  assert [int(b["mask"].sum()) for b in batches] == [8, 8, 1]
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert np.array_equal(labels, np.arange(3, 20))
  np.testing.assert_allclose(batches[0]["image"][:, 0, 0, 0], np.arange(3, 11) / 255.0)
  assert np.all(batches[-1]["image"][1:] == 0) and np.all(batches[-1]["label"][1:] == 0)


def test_augmentation_randomness_changes_with_step_and_seed():
  info = SourceInfo("same", "train", 1, (6, 6, 1), (0.0,), (1.0,), False)
  images = np.random.default_rng(0).integers(0, 256, size=(1, 6, 6, 1), dtype=np.uint8)
  source = ArraySource(info, np.repeat(images, 16, axis=0), np.zeros(16, int))
  stream = BatchStream(source, np.arange(16), 16, seed=0, augment=AUGMENT)
  other_seed = BatchStream(source, np.arange(16), 16, seed=1, augment=AUGMENT)
  assert not np.array_equal(stream.batch_at(0)["image"], stream.batch_at(1)["image"])
  assert not np.array_equal(stream.batch_at(0)["image"], other_seed.batch_at(0)["image"])


def test_tuple_seeds_separate_the_streams_of_one_run():
  source = _indexed_source(40)
  weights = BatchStream(source, np.arange(20), 4, seed=(7, 0), augment=AUGMENT)
  architecture = BatchStream(source, np.arange(20, 40), 4, seed=(7, 1), augment=AUGMENT)
  positions = weights.indices_at(0), architecture.indices_at(0) - 20
  assert not np.array_equal(*positions)
  assert np.array_equal(
    weights.indices_at(3),
    BatchStream(source, np.arange(20), 4, seed=(7, 0), augment=AUGMENT).indices_at(3),
  )
  with pytest.raises(ValueError, match="seed"):
    BatchStream(source, np.arange(20), 4, seed=(7, -1), augment=AUGMENT)


def test_seeds_differing_by_trailing_zeros_are_different_seeds():
  # numpy alone seeds [7] and [7, 0] identically; the streams must not.
  source = _indexed_source(40)
  orders = [
    BatchStream(source, np.arange(40), 40, seed=seed, augment=AUGMENT).indices_at(0)
    for seed in (7, (7, 0), (7, 0, 0))
  ]
  assert not np.array_equal(orders[0], orders[1])
  assert not np.array_equal(orders[1], orders[2])
