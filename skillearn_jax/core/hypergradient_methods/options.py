"""The knobs of the hypergradient methods, shared by every method module.

This module owns `HypergradientOptions` and `EXACT_MODES`, the two ways of
taking a stage's second derivatives exactly. It lives in the package so that
method modules can name it without importing the public facade
(`core.hypergradients`), which imports them.
"""

from __future__ import annotations

import dataclasses

EXACT_MODES = ('forward_over_reverse', 'reverse_over_reverse')


@dataclasses.dataclass(frozen=True)
class HypergradientOptions:
  """Knobs of the approximate methods."""

  fd_epsilon: float = 0.01  # DARTS' R = 0.01 / ||v||
  neumann_steps: int = 10
  neumann_lr: float | None = None  # default: each set's unroll rate xi
  exact_mode: str = 'forward_over_reverse'  # one of EXACT_MODES
  cg_steps: int = 10  # implicit_cg's conjugate-gradient iterations per stage

  def __post_init__(self):
    if self.exact_mode not in EXACT_MODES:
      raise ValueError(
        f'HypergradientOptions.exact_mode: {self.exact_mode!r} '
        f'is not allowed; allowed: {EXACT_MODES}'
      )
