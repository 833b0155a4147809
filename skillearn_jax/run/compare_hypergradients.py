"""Side-by-side hypergradients of every method on the same batches, explained.

Owns the measurement behind `hypercheck`: for one program state and one set
of batches it computes each method's hypergradient per validation-stage set,
says as it goes which method it compiles and runs and how long each took
(compile and run seconds apart), compares each with `exact` (cosine
similarity, relative error) and, where the skill knows one, with the closed
form of what that method approximates (`TARGETS`: the unrolled hypergradient
for exact, finite differences and first order; the one at the inner
optimum for the implicit methods). It times the compiled computation
(median over repeats, compile excluded), reads XLA's memory estimate, and
attaches notes in words: a non-finite or exploding result with its reason
(a Neumann series whose estimated spectral radius of I - eta H is >= 1, by
power iteration with Hessian-vector products), a truncated series, a
Hessian CG cannot handle, and a disagreement that holds by construction.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import numpy as np

from skillearn_jax import core

# What each method approximates: the key of a skill's closed forms
# (`base.SkillSetup.closed_form`) and its meaning in words.
TARGETS = {
  'exact': 'unrolled',
  'finite_difference': 'unrolled',
  'first_order': 'unrolled',
  'implicit': 'optimum',
  'implicit_cg': 'optimum',
}
TARGET_WORDS = {
  'unrolled': 'the hypergradient of the unrolled inner steps',
  'optimum': 'the hypergradient at the inner problem\'s true optimum',
}
IMPLICIT = ('implicit', 'implicit_cg')
# A method whose norm exceeds exact's by this factor is said to blow up.
GROWTH_LIMIT = 1e3
# A Neumann series whose unsummed tail rho^(N+1) is above this is truncated;
# one whose terms grow by this factor or more over its N + 1 terms diverges.
TRUNCATION_LIMIT = 0.1
GROWTH_OVER_TERMS = 10.0
INDEFINITE = ': the Hessian is indefinite there'
# Below this cosine to exact, an approximate method's gap gets its reason.
AGREEMENT = 0.99


def _flat(tree) -> np.ndarray:
  leaves = jax.tree_util.tree_leaves(tree)
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])


def _cosine(a, b) -> float:
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  if na == 0 or nb == 0:
    return float(na == nb)
  return float(a @ b / (na * nb))


def _rel_error(a, b) -> float:
  nb = np.linalg.norm(b)
  return float(np.linalg.norm(a - b) / nb) if nb else float(np.linalg.norm(a))


def _peak_mb(compiled) -> float | None:
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  total = (
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    + stats.temp_size_in_bytes
    - stats.alias_size_in_bytes
  )
  return round(total / 2**20, 3)


def _timed(fn, args, repeats: int, log: Callable[[str], None], label: str):
  """(result, compile seconds, median run seconds, peak MB) of jitted `fn`."""
  log(f'{label}: compiling ...')
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  log(f'{label}: compiled in {compile_s:.1f} s; running {repeats + 1} time(s) ...')
  t0 = time.perf_counter()
  result = jax.block_until_ready(compiled(*args))
  times = [time.perf_counter() - t0]  # the first run: kept only when there is no other
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  median = statistics.median(times[1:] or times)
  log(f'{label}: done, {median:.4g} s a run (median of {max(repeats, 1)})')
  return result, compile_s, median, _peak_mb(compiled)


def neumann_notes(method: str, diagnostics: dict, options: core.HypergradientOptions) -> list:
  """Words on whether `method`'s inverse-Hessian solve holds at this state."""
  notes = []
  for stage, d in diagnostics.items():
    radius, curvature = d['radius'], d['curvature']
    terms = options.neumann_steps + 1
    growth = radius**terms
    if method == 'implicit' and radius >= 1.0 and growth >= GROWTH_OVER_TERMS:
      notes.append(
        f'diverges at stage {stage}: the Neumann series sum_i (I - eta H)^i needs the '
        f'spectral radius of I - eta H below 1, estimated {radius:.3g} by power iteration '
        f'(curvature {curvature:.3g} along its direction), so its {terms} terms grow up to '
        f'{growth:.3g}x; a smaller unroll learning rate, implicit_cg or exact avoid it'
      )
    elif method == 'implicit' and radius >= 1.0:
      notes.append(
        f'does not converge at stage {stage}: spectral radius of I - eta H ~ {radius:.6g} '
        f'>= 1 (curvature {curvature:.3g} along its direction{INDEFINITE * (curvature < 0)}); '
        f'its {terms} terms stay bounded, so this is a truncated sum rather than H^-1 applied'
      )
    elif method == 'implicit' and growth > TRUNCATION_LIMIT:
      notes.append(
        f'truncated at stage {stage}: spectral radius of I - eta H ~ {radius:.3g}, so '
        f'{terms} terms leave about {growth:.0%} of the series unsummed; '
        'raise --config.neumann_steps'
      )
    if method == 'implicit_cg' and curvature < 0:
      notes.append(
        f'stage {stage}: the Hessian has negative curvature ({curvature:.3g}) along its '
        'dominant direction; conjugate gradients assume it positive definite'
      )
  return notes


def explain(method: str, entry: dict, exact_entry: dict, diagnostics: dict | None, options) -> list:
  """Notes in words on one method's result for one set, worst first."""
  notes = []
  if not np.isfinite(entry['norm']):
    notes.append('non-finite hypergradient (nan or inf)')
  elif exact_entry['norm'] > 0 and entry['norm'] > GROWTH_LIMIT * exact_entry['norm']:
    notes.append(
      f'norm {entry["norm"]:.3g} is {entry["norm"] / exact_entry["norm"]:.3g}x '
      'exact\'s: the computation blows up'
    )
  broken = bool(notes)
  if diagnostics is not None and method in IMPLICIT:
    solve_notes = neumann_notes(method, diagnostics, options)
    broken = broken or any(n.startswith('diverges') for n in solve_notes)
    notes += solve_notes
    far = max(d['inner_grad_norm'] for d in diagnostics.values())
    # A divergent or non-finite result has no finer reason to give.
    if not broken and entry['cosine_vs_exact'] < 0:
      notes.append(
        f'{method} vs exact disagree by construction: {method} approximates the '
        'hypergradient at the inner optimum (implicit function theorem), exact the one of '
        'the unrolled steps from the current weights; they agree only near a stationary '
        f'point, and here the inner gradient norm at the unrolled weights is {far:.3g}'
      )
    elif not broken and entry.get('rel_error_vs_closed_form', 0) > TRUNCATION_LIMIT:
      notes.append(
        f'{method} is taken at the unrolled weights, not at the optimum its closed form '
        f'assumes (inner gradient norm there {far:.3g})'
      )
  if method == 'first_order' and entry['norm'] == 0 and exact_entry['norm'] > 0:
    notes.append(
      'zero by construction: first order drops the second-order term, and the validation '
      'loss does not read these parameters directly'
    )
  elif method == 'first_order' and entry['cosine_vs_exact'] < AGREEMENT:
    notes.append('differs by design: first order drops the second-order term (xi -> 0)')
  if method == 'finite_difference' and not broken and entry['cosine_vs_exact'] < AGREEMENT:
    steep = [st for st, d in (diagnostics or {}).items() if d['radius'] >= 2.0]
    chain = (
      f', and stages {", ".join(steep)} multiply those errors by |1 - eta H| up to '
      f'{max(diagnostics[st]["radius"] for st in steep):.3g} each along the chain'
      if steep
      else ''
    )
    notes.append(
      f'central differences at r = fd_epsilon / ||v|| = {options.fd_epsilon:g} / ||v|| step '
      'across the kinks of ReLU and max-pool and lose digits to float32 rounding'
      f'{chain} (docs/hypergradients.md); exact is the unrolled hypergradient itself'
    )
  if 'rel_error_vs_closed_form' in entry and entry['rel_error_vs_closed_form'] < 1e-3:
    notes.append(
      f'matches {TARGET_WORDS[entry["closed_form"]]} (closed form) to a relative '
      f'{entry["rel_error_vs_closed_form"]:.1e}'
    )
  return notes


def _at(s, b, k) -> dict:
  """The keywords that place a core function at state `s`, batches `b` and key `k`."""
  return dict(
    params=s.params,
    opt_states=s.opt_states,
    model_state=s.model_state,
    step=s.step,
    batches=b,
    key=k,
  )


def _hypergradient(program, method: str, options: core.HypergradientOptions):
  """(state, batches, key) -> each validation-stage set's hypergradient by `method`."""
  return lambda s, b, k: core.hypergradient(
    program, method=method, options=options, **_at(s, b, k)
  )[0]


def jitted_hypergradient(program, method: str, options: core.HypergradientOptions):
  """(state, batches, key) -> each validation-stage set's hypergradient by `method`, jitted."""
  return jax.jit(_hypergradient(program, method, options))


def compare(
  setup,
  state: core.ProgramState,
  batches,
  key,
  *,
  methods,
  options: core.HypergradientOptions,
  repeats: int = 5,
  power_iterations: int = 20,
  log: Callable[[str], None] = lambda line: None,
) -> dict:
  """Returns {"methods": {method: {set: {norm, cosine_vs_exact, ..., notes}}}
  [, "neumann": {stage: {radius, curvature, inner_grad_norm}}]}; `log`
  receives a line as each method compiles and runs."""
  program = setup.program
  results, grads_by_method = {}, {}
  # exact first: every other method is compared with it.
  methods = ['exact'] + [m for m in methods if m != 'exact']
  args = (state, batches, key)

  for i, method in enumerate(methods):
    grads, compile_s, median, peak = _timed(
      _hypergradient(program, method, options),
      args,
      repeats,
      log,
      f'[{i + 1}/{len(methods)}] {method}',
    )
    grads_by_method[method] = grads
    results[method] = {'compile_s': round(compile_s, 3), 'median_s': round(median, 6)}
    results[method]['peak_mb'] = peak
  diagnostics = None
  if power_iterations and any(m in IMPLICIT for m in methods):
    raw, *_ = _timed(
      lambda s, b, k: core.hypergradients.neumann_contraction(
        program, options=options, iterations=power_iterations, **_at(s, b, k)
      ),
      args,
      0,
      log,
      f'Neumann contraction ({power_iterations} power iterations per stage)',
    )
    diagnostics = {
      stage: {k: float(v) for k, v in d.items()} for stage, d in jax.device_get(raw).items()
    }
  closed = setup.closed_form(state, batches) if setup.closed_form else None
  out = {}
  for method in methods:
    per_set = {}
    for name in program.validation_sets:
      g = _flat(grads_by_method[method][name])
      ref = _flat(grads_by_method['exact'][name])
      entry = {
        'norm': float(np.linalg.norm(g)),
        'cosine_vs_exact': _cosine(g, ref),
        'rel_error_vs_exact': _rel_error(g, ref),
        **results[method],
      }
      target = TARGETS.get(method)
      if closed is not None and name in closed.get(target, {}):
        entry['closed_form'] = target
        entry['rel_error_vs_closed_form'] = _rel_error(g, _flat(closed[target][name]))
      per_set[name] = entry
    for name, entry in per_set.items():
      entry['notes'] = explain(method, entry, out.get('exact', per_set)[name], diagnostics, options)
    out[method] = per_set
  report = {'methods': out}
  if diagnostics is not None:
    report['neumann'] = diagnostics
  return report


def summary_lines(report: dict) -> list:
  """One line per method and set, then its notes indented: for the terminal."""
  lines = []
  for method, per_set in report['methods'].items():
    for name, e in per_set.items():
      closed = (
        f', rel. error vs closed form ({e["closed_form"]}) {e["rel_error_vs_closed_form"]:.3g}'
        if 'closed_form' in e
        else ''
      )
      lines.append(
        f'{method} [{name}]: norm {e["norm"]:.3g}, cosine vs exact '
        f'{e["cosine_vs_exact"]:.3f}{closed}; compile {e["compile_s"]:.1f} s, '
        f'run {e["median_s"]:.3g} s'
      )
      lines += [f'  - {note}' for note in e['notes']]
  return lines
