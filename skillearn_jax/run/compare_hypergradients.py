"""Side-by-side hypergradients of every method on the same batches.

Owns the measurement behind `hypercheck`: for one program state and one set
of batches it computes each method's hypergradient per validation-stage set,
compares it with `exact` (cosine similarity, relative error) and, where the
skill knows one, with the closed form; it times the compiled computation
(median over repeats, compile excluded) and reads XLA's memory estimate.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from skillearn_jax import core


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


def jitted_hypergradient(program, method: str, options: core.HypergradientOptions):
  """(state, batches, key) -> each validation-stage set's hypergradient by `method`, jitted."""
  return jax.jit(
    lambda s, b, k: core.hypergradient(
      program,
      params=s.params,
      opt_states=s.opt_states,
      model_state=s.model_state,
      step=s.step,
      batches=b,
      key=k,
      method=method,
      options=options,
    )[0]
  )


def compare(
  setup,
  state: core.ProgramState,
  batches,
  key,
  *,
  methods,
  options: core.HypergradientOptions,
  repeats: int = 5,
) -> dict:
  """Returns {"methods": {method: {set: {norm, cosine_vs_exact, ...}}}}."""
  program = setup.program
  results, grads_by_method = {}, {}
  methods = list(methods)
  if 'exact' not in methods:
    methods.insert(0, 'exact')
  for method in methods:
    fn = jitted_hypergradient(program, method, options)
    compiled = fn.lower(state, batches, key).compile()
    grads = jax.block_until_ready(compiled(state, batches, key))
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(state, batches, key))
      times.append(time.perf_counter() - t0)
    grads_by_method[method] = grads
    results[method] = {'_median_s': statistics.median(times), '_peak_mb': _peak_mb(compiled)}
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
        'median_s': round(results[method]['_median_s'], 6),
        'peak_mb': results[method]['_peak_mb'],
      }
      if closed is not None and name in closed:
        entry['rel_error_vs_closed_form'] = _rel_error(g, _flat(closed[name]))
      per_set[name] = entry
    out[method] = per_set
  return {'methods': out}
