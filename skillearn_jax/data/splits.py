"""Deterministic index splits: the search split of the DARTS family and fixed holdouts.

Architecture search (DARTS, LPT, IL) never sees the test set: the official training set is cut
at `floor(train_portion * n)`; the first part trains the weights, the rest is the "validation"
half that updates the architecture (CIFAR-10 with the default 0.5: 25k / 25k). Evaluation
retrains on the full training set and reports on the test split, so its indices are simply
`arange(n)` of each split. `holdout_split` carves a fixed, seeded test part out of a dataset
that ships without one (the embedded digits).
"""

from __future__ import annotations

import numpy as np


def search_split(num_examples: int, train_portion: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """(weight indices, architecture indices): the first floor(train_portion * n) and the rest."""
  if not 0.0 < train_portion < 1.0:
    raise ValueError(f"train_portion must lie in (0, 1); got {train_portion}")
  cut = int(np.floor(train_portion * num_examples))
  if cut == 0 or cut == num_examples:
    raise ValueError(
      f"train_portion={train_portion} leaves an empty half of {num_examples} examples; "
      "both the weight half and the architecture half need at least one example"
    )
  return np.arange(cut), np.arange(cut, num_examples)


def holdout_split(num_examples: int, num_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(kept indices, holdout indices) from one seeded permutation; both keep permuted order."""
  if not 0 < num_holdout < num_examples:
    raise ValueError(f"num_holdout must lie in (0, num_examples={num_examples}); got {num_holdout}")
  order = np.random.default_rng(seed).permutation(num_examples)
  return order[: num_examples - num_holdout], order[num_examples - num_holdout :]
