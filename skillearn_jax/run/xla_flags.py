"""XLA:CPU flags this library runs with by default.

This module owns `CPU_DEFAULTS` and `apply_defaults`, which adds each default
to the `XLA_FLAGS` environment variable unless the user already set that flag.
XLA reads the variable when JAX first starts a backend, so call it before the
first JAX computation (the CLI, the benchmarks and the tests do).

Measured on the DARTS supernet (batch 16, 5 cells, C = 16, this 2-core CPU):
- YNNPACK fusions off: a forward + backward pass takes 5.9 s instead of 7.1 s
  and compiles in 40 s instead of 45 s;
- XLA:CPU's fast-compile preset (per XLA's source: LLVM O1, capped simplifier
  iterations, call graph flattened after fusion): a
  finite-difference search step takes 7.5-8.1 s instead of 10.5-11.9 s and
  compiles in 57-63 s instead of 73-77 s (three alternating runs each).
  Results agree with the default preset to float rounding (max relative
  gradient difference 1e-5).
- LLVM's loop unroller and SLP vectorizer off (XLA:CPU backend options; the
  loop vectorizer stays): XLA's compile 12-23 % shorter for first order,
  finite difference and exact at batch 16 / 5 cells and first order at
  batch 64 / 8 cells (unchanged for finite difference there), with step
  times no slower.
"""

from __future__ import annotations

import os

CPU_DEFAULTS = (
  '--xla_cpu_experimental_ynn_fusion_type=',
  '--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE',
  '--xla_backend_extra_options=xla_cpu_disable_loop_unrolling,xla_cpu_disable_slp_vectorizer',
)


def apply_defaults(environ=os.environ) -> str:
  """Adds the missing `CPU_DEFAULTS` to `environ['XLA_FLAGS']`; returns it."""
  flags = environ.get('XLA_FLAGS', '')
  for flag in CPU_DEFAULTS:
    name = flag.split('=', 1)[0]
    if name not in flags:
      flags = f'{flags} {flag}'.strip()
  environ['XLA_FLAGS'] = flags
  return flags
