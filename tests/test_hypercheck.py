"""hypercheck on the ridge config: JSON shape and agreement with truth."""

import json
import subprocess
import sys


def test_hypercheck_ridge_reports_every_method_against_closed_form():
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'skillearn_jax.hypercheck',
      '--config=configs/hpo_ridge.py',
      '--repeats=2',
    ],
    check=True,
    capture_output=True,
    text=True,
    timeout=300,
  ).stdout
  report = json.loads(out)
  methods = report['methods']
  assert set(methods) == {'exact', 'finite_difference', 'first_order', 'implicit', 'implicit_cg'}
  for method, per_set in methods.items():
    entry = per_set['log_lam']
    for key in (
      'norm',
      'cosine_vs_exact',
      'rel_error_vs_exact',
      'median_s',
      'peak_mb',
      'rel_error_vs_closed_form',
    ):
      assert key in entry, (method, key)
  assert methods['exact']['log_lam']['rel_error_vs_closed_form'] < 1e-5
  assert methods['finite_difference']['log_lam']['rel_error_vs_closed_form'] < 1e-3
  assert methods['finite_difference']['log_lam']['cosine_vs_exact'] > 0.999


def test_hypercheck_refuses_a_bad_value_naming_the_field():
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'skillearn_jax.hypercheck',
      '--config=configs/hpo_ridge.py',
      '--config.hypergradient=magic',
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode != 0
  assert 'config.hypergradient' in proc.stderr and 'exact' in proc.stderr
