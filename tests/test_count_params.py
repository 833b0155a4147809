"""Tests for skillearn_jax.count_params: published parameter counts and the CLI."""

import functools
import json
import subprocess
import sys

import pytest

from skillearn_jax.nas.eval_network import count_eval_params
from skillearn_jax.nas import genotypes as G


@functools.lru_cache(maxsize=None)
def counts(genotype, network, **sizes):
  """Cached: each full-size trace takes seconds and several tests share them."""
  return count_eval_params(genotype, network, **sizes)


@pytest.mark.parametrize(
  "genotype, network, published_m",
  [
    ("DARTS_V2", "cifar", 3.3),  # DARTS paper, CIFAR-10
    ("PDARTS", "cifar", 3.4),  # P-DARTS paper, CIFAR-10
    ("PC_DARTS_cifar", "cifar", 3.6),  # PC-DARTS paper, CIFAR-10
    ("DARTS_V2", "imagenet", 4.7),  # DARTS paper, ImageNet mobile setting
  ],
)
def test_published_parameter_counts(genotype, network, published_m):
  assert counts(genotype, network)["params_m"] == pytest.approx(published_m, abs=0.05)


@pytest.mark.parametrize(
  "network, official_m",
  [
    ("cifar", 3.349342),  # official train.py log: "param size = 3.349342MB"
    ("imagenet", 4.718752),  # official train_imagenet.py log
  ],
)
def test_matches_official_count_parameters_in_mb_exactly(network, official_m):
  result = counts("DARTS", network)
  assert result["params"] == round(official_m * 1e6)
  assert result["auxiliary_params"] > 0  # computed, but excluded like the official count


def test_size_overrides_change_only_what_they_should():
  base = counts("DARTS_V2", "cifar")
  cifar100 = count_eval_params("DARTS_V2", "cifar", num_classes=100)
  # Only the classifier (576 features) and the auxiliary linear (768 features) grow.
  assert cifar100["params"] - base["params"] == 576 * 90 + 90
  assert cifar100["auxiliary_params"] - base["auxiliary_params"] == 768 * 90 + 90
  small = count_eval_params("DARTS_V2", "cifar", layers=8, channels=16)
  assert (small["layers"], small["channels"], small["num_classes"]) == (8, 16, 10)
  assert small["params"] < base["params"] / 5


def run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "skillearn_jax.count_params", *args],
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )


def test_cli_prints_one_json_line(tmp_path):
  path = tmp_path / "pdarts.json"
  G.save_genotype(G.PDARTS, path)
  result = run_cli(f"--genotype={path}", "--network=cifar", "--num_classes=100")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1
  record = json.loads(lines[0])
  # CIFAR-100 adds 90 classes to the 576-feature classifier.
  assert record["params"] == counts("PDARTS", "cifar")["params"] + 576 * 90 + 90
  assert record["params_m"] == record["params"] / 1e6
  assert record["genotype"] == str(path) and record["num_classes"] == 100


def test_cli_rejects_unknown_genotype():
  result = run_cli("--genotype=DARTS_V3", "--network=cifar")
  assert result.returncode != 0
  assert "unknown genotype 'DARTS_V3'" in result.stderr
  assert "PC_DARTS_cifar" in result.stderr
  assert result.stdout == ""


def test_cli_counts_a_search_supernet_as_the_official_model_search():
  result = run_cli("--network=search", "--space=pcdarts", "--layers=8", "--channels=16")
  assert result.returncode == 0, result.stderr
  record = json.loads(result.stdout.strip().splitlines()[-1])
  # The official PC-DARTS model_search.py (K = 4) counts these weights; see
  # tests/nas/test_variants.py for the counter written from its modules.
  assert record["params"] == 299_578 and record["space"] == "pcdarts"
  bad = run_cli("--network=search", "--space=pdarts", "--primitives=sep_conv_9x9")
  assert bad.returncode != 0 and "unknown ops ['sep_conv_9x9']" in bad.stderr
