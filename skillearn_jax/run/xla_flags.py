"""XLA:CPU flags this library runs with by default.

This module owns `CPU_DEFAULTS` and `apply_defaults`, which adds each default
to the `XLA_FLAGS` environment variable unless the user already set that flag,
and only when JAX is going to run on the CPU (`expected_platform`): they were
tuned for XLA:CPU and a GPU run leaves `XLA_FLAGS` as the user set it.
XLA reads the variable when JAX first starts a backend, so call it before the
first JAX computation (the CLI, the benchmarks and the tests do); for the same
reason the platform is read from the environment, not `jax.default_backend()`,
which would start the backend.

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

import glob
import importlib.metadata
import importlib.util
import os
import pkgutil

CPU_DEFAULTS = (
  '--xla_cpu_experimental_ynn_fusion_type=',
  '--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE',
  '--xla_backend_extra_options=xla_cpu_disable_loop_unrolling,xla_cpu_disable_slp_vectorizer',
)


# An accelerator plugin of JAX (by a word of its module or entry-point name) and the device
# files whose presence says its hardware is there.
ACCELERATOR_DEVICES = {
  'cuda': '/dev/nvidia[0-9]*',
  'rocm': '/dev/kfd',
  'tpu': '/dev/accel[0-9]*',
}


def _jax_plugins() -> list[str]:
  """Names of the installed JAX plugins (the `jax_plugins` namespace package and entry-point
  group JAX discovers them by), found without importing JAX."""
  names = [e.name for e in importlib.metadata.entry_points(group='jax_plugins')]
  spec = importlib.util.find_spec('jax_plugins')
  if spec is not None and spec.submodule_search_locations:
    names += [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)]
  if importlib.util.find_spec('libtpu') is not None:
    names.append('tpu')
  return names


def expected_platform(environ=os.environ) -> str:
  """'cpu' or the accelerator ('cuda', 'rocm', 'tpu') JAX will run on: the first entry of
  `JAX_PLATFORMS` when set (JAX's own choice), else an installed accelerator plugin whose
  device files exist, else 'cpu'."""
  platforms = environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    first = platforms.split(',')[0].strip().lower()
    return 'cuda' if first == 'gpu' else first
  for name in _jax_plugins():
    for accelerator, devices in ACCELERATOR_DEVICES.items():
      if accelerator in name.lower() and glob.glob(devices):
        return accelerator
  return 'cpu'


def apply_defaults(environ=os.environ, platform: str | None = None) -> str:
  """Adds the missing `CPU_DEFAULTS` to `environ['XLA_FLAGS']` when JAX will run on the CPU
  (`platform`, default `expected_platform(environ)`); returns the flags."""
  flags = environ.get('XLA_FLAGS', '')
  if (platform or expected_platform(environ)) != 'cpu':
    return flags
  for flag in CPU_DEFAULTS:
    name = flag.split('=', 1)[0]
    if name not in flags:
      flags = f'{flags} {flag}'.strip()
  environ['XLA_FLAGS'] = flags
  return flags
