"""The core options a config sets.

This module owns `hypergradient_options`, the one place that reads the
hypergradient fields of a config (`fd_epsilon`, `neumann_steps`,
`cg_steps`, `exact_mode`), shared by the runner and `hypercheck`; it
imports only the core, so neither pays for the other's dependencies at
start-up.
"""

from __future__ import annotations

from skillearn_jax import core


def hypergradient_options(config) -> core.HypergradientOptions:
  """The hypergradient knobs `config` sets."""
  return core.HypergradientOptions(
    fd_epsilon=config.fd_epsilon,
    neumann_steps=config.neumann_steps,
    cg_steps=config.cg_steps,
    exact_mode=config.exact_mode,
  )
