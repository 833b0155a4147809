"""The registry of hypergradient methods: one module per method, one line each.

This package owns the methods that differentiate the validation stage
through the chain of learning stages (Skillearn Eq. 4-5), each a module
exposing one function `(chain, hyper, options) -> (grads, metrics)` (the
gradient of the validation objective; the sign for maximized sets is the
engine's business), `shared` holding what several of them use. `REGISTRY`
maps each method's name to its function; `lookup` is the one place that
validates a method name. Adding a method is one module plus one line below.
"""

from __future__ import annotations

from typing import Callable

from skillearn_jax.core.hypergradient_methods import (
  exact,
  finite_difference,
  first_order,
  implicit,
  implicit_cg,
)

REGISTRY: dict[str, Callable] = {
  'exact': exact.exact,
  'finite_difference': finite_difference.finite_difference,
  'first_order': first_order.first_order,
  'implicit': implicit.implicit,
  'implicit_cg': implicit_cg.implicit_cg,
}
METHODS = tuple(REGISTRY)


def lookup(name: str) -> Callable:
  """The function of method `name`; raises ValueError naming the allowed ones."""
  if name not in REGISTRY:
    raise ValueError(f'hypergradient: unknown method {name!r}; allowed: {METHODS}')
  return REGISTRY[name]
