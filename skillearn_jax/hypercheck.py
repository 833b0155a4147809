"""Compare every hypergradient method on the same batches, as JSON, and say why they differ.

  python -m skillearn_jax.hypercheck --config=configs/hpo_ridge.py
  python -m skillearn_jax.hypercheck --config=configs/darts.py:quick --methods=exact,implicit

Says on stderr which method it compiles and runs and how long each took, then one line per
method with its notes (a divergent Neumann series and its spectral radius, a disagreement by
construction, agreement with a closed form). Prints on stdout
{"methods": {METHOD: {SET: {"norm", "cosine_vs_exact", "rel_error_vs_exact", "compile_s",
"median_s", "peak_mb", "notes"[, "closed_form", "rel_error_vs_closed_form"]}}}
[, "neumann": {STAGE: {"radius", "curvature", "inner_grad_norm"}}]}.
"""

import json
import sys

from absl import flags
import jax
from ml_collections import config_flags

from skillearn_jax import cli
from skillearn_jax import core
from skillearn_jax import skills
from skillearn_jax.skills import base
from skillearn_jax.run import compare_hypergradients
from skillearn_jax.run import loop
from skillearn_jax.run import options as options_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config.', lock_config=True)
_METHODS = flags.DEFINE_list(
  'methods', list(core.METHODS), 'Methods to compare (exact is always included).'
)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats per method.')
_STEP = flags.DEFINE_integer('step', 0, 'Which step\'s batches to use.')
_POWER_ITERATIONS = flags.DEFINE_integer(
  'power_iterations',
  20,
  'Power iterations per stage estimating the Neumann series\' spectral radius (0: none).',
)


def _say(line: str) -> None:
  print(f'hypercheck: {line}', file=sys.stderr, flush=True)


def main(argv):
  del argv
  config = cli.config_of(_CONFIG)
  skills.check(config)
  for m in _METHODS.value:
    core.hypergradients.lookup(m)  # refuses an unknown name before any compile
  _say(f'building {config.experiment} ...')
  setup = skills.build(config)
  if not isinstance(setup, base.SkillSetup):
    raise cli.config_check.ConfigError(
      f'config.experiment: {config.experiment!r} is no Skillearn program (no hypergradient)'
    )
  key = loop.root_key(config)
  params, model_state = setup.init(jax.random.fold_in(key, 0))
  state = core.init_state(setup.program, params, model_state)
  options = options_lib.hypergradient_options(config)
  report = compare_hypergradients.compare(
    setup,
    state,
    setup.batches_at(_STEP.value),
    jax.random.fold_in(jax.random.fold_in(key, 1), _STEP.value),  # the run's key of that step
    methods=_METHODS.value,
    options=options,
    repeats=_REPEATS.value,
    power_iterations=_POWER_ITERATIONS.value,
    log=_say,
  )
  for line in compare_hypergradients.summary_lines(report):
    _say(line)
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  cli.run_main(main)
