"""hypercheck on the ridge config: JSON shape, agreement with truth, and its words."""

import json
import subprocess
import sys

import numpy as np

from skillearn_jax import core
from skillearn_jax.run import compare_hypergradients


def _hypercheck(*overrides):
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'skillearn_jax.hypercheck',
      '--config=configs/hpo_ridge.py',
      '--repeats=2',
      *overrides,
    ],
    check=True,
    capture_output=True,
    text=True,
    timeout=300,
  )
  return json.loads(proc.stdout), proc.stderr


def test_hypercheck_ridge_reports_every_method_against_closed_form():
  report, said = _hypercheck()
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
  # Each method against what it approximates: the implicit ones the optimum.
  assert methods['implicit']['log_lam']['closed_form'] == 'optimum'
  assert methods['exact']['log_lam']['closed_form'] == 'unrolled'
  # Progress and timing as each method is computed, then the notes.
  for i, method in enumerate(methods, start=1):
    assert f'[{i}/5] {method}: compiling' in said
    assert f'[{i}/5] {method}: compiled in' in said
  assert 'compile_s' in methods['implicit']['log_lam']
  implicit = methods['implicit']['log_lam']
  # ridge at init: w' is far from w*, so implicit's sign differs from the unroll's.
  assert implicit['cosine_vs_exact'] < 0
  assert any('disagree by construction' in n for n in implicit['notes'])
  assert any('truncated' in n for n in implicit['notes'])  # radius ~0.91, 11 terms
  assert 'disagree by construction' in said
  assert any('zero by construction' in n for n in methods['first_order']['log_lam']['notes'])
  assert 0.8 < report['neumann']['train']['radius'] < 1.0


def test_hypercheck_flags_a_divergent_neumann_series_with_its_reason():
  # xi = 1: eta * the largest curvature of the ridge objective is ~2.7, so
  # |1 - eta * lambda_max| ~ 1.7 >= 1 and the series diverges.
  report, said = _hypercheck('--config.ridge.xi=1.0', '--methods=implicit')
  assert set(report['methods']) == {'exact', 'implicit'}
  radius = report['neumann']['train']['radius']
  assert radius > 1.5
  notes = report['methods']['implicit']['log_lam']['notes']
  assert any(n.startswith('diverges at stage train') and 'spectral radius' in n for n in notes)
  # a divergent result is not also said to disagree by construction
  assert not any('by construction' in n for n in notes)
  assert 'diverges at stage train' in said


def test_explain_flags_non_finite_and_exploding_results():
  exact = {'norm': 1.0, 'cosine_vs_exact': 1.0}
  options = core.HypergradientOptions()
  nan = compare_hypergradients.explain(
    'finite_difference', {'norm': float('nan'), 'cosine_vs_exact': np.nan}, exact, None, options
  )
  assert nan[0].startswith('non-finite')
  big = compare_hypergradients.explain(
    'implicit', {'norm': 1.5e18, 'cosine_vs_exact': -1.0}, exact, None, options
  )
  assert 'blows up' in big[0]
  fine = compare_hypergradients.explain(
    'finite_difference', {'norm': 1.01, 'cosine_vs_exact': 0.99}, exact, None, options
  )
  assert fine == []


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


def test_neumann_notes_tell_divergence_from_a_radius_just_above_one():
  options = core.HypergradientOptions(neumann_steps=10)
  notes = compare_hypergradients.neumann_notes
  # IL at the paper's constants: eta * 2 lambda = 5, so |1 - 5| = 4 and 4^11 growth
  blown = notes('implicit', {'round2/a': {'radius': 4.0, 'curvature': 200.0}}, options)
  assert blown[0].startswith('diverges at stage round2/a') and '4.19e+06x' in blown[0]
  # DARTS quick: a slightly negative curvature, radius 1.0009: bounded over 11 terms
  flat = notes('implicit', {'train': {'radius': 1.0009, 'curvature': -0.035}}, options)
  assert flat[0].startswith('does not converge at stage train') and 'indefinite' in flat[0]
  assert notes('implicit', {'train': {'radius': 0.5, 'curvature': 1.0}}, options) == []
  cg = notes('implicit_cg', {'train': {'radius': 1.0009, 'curvature': -0.035}}, options)
  assert 'positive definite' in cg[0]
