"""Refuses to resume a workdir's checkpoints under a config of another run.

A workdir belongs to the config in its config.json. Re-running the same
command resumes it; re-running with another seed, batch size, network,
optimizer or number of epochs would continue the old state under new
meanings (another data order, a re-stretched learning-rate schedule) and
leave a run that no config describes. This module compares the stored
config with the new one before the runner overwrites it, and names every
field that differs. Fields that only say how far to go, how often to write,
where to find the data and the compile cache, how exact hypergradients
are computed or which convolution implementation runs (the same numbers
either way) may change; `net.precision` may not (bfloat16 changes the
numbers, so a run resumed in another precision is no one config's run).
"""

from __future__ import annotations

import json
import os

from absl import logging

from skillearn_jax import config_check

MAY_CHANGE_ON_RESUME = (
  'max_steps',
  'log_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'eval_every_epochs',
  'compilation_cache_dir',
  'data.data_dir',
  'allow_config_change',
  'exact_mode',
  'net.conv_impl',
)
_ABSENT = '<absent>'
# Fields older workdirs stored under another name, or that no longer exist, and the value an
# absent field had before it existed (older searches seeded with threefry2x32; implicit_cg
# came with its default; IL coupled by the plain sum before il.coupling).
RENAMED = {'skill': 'experiment'}
RETIRED = ('mode',)
DEFAULTS_BEFORE = {
  'rng_impl': 'threefry2x32',
  'cg_steps': 10,
  'space': 'darts',
  'alphas_optim.warmup_epochs': 0,
  'alphas_optim.clip': 0.0,
  'darts_plus.enabled': False,
  'il.coupling': 'sum',
  'net.precision': 'float32',
}
# Blocks older workdirs lack whole: knobs of a variant the run did not use (space 'darts',
# darts_plus off, both checked above).
ADDED_BLOCKS = ('pcdarts', 'darts_minus', 'pdarts', 'darts_plus')


def _flat(tree, prefix: str = '') -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flat(value, f'{prefix}.{key}' if prefix else key))
  return flat


def differences(stored: dict, current: dict) -> list[str]:
  """'field: stored -> current' for each field that differs and may not."""
  old = {RENAMED.get(k, k): v for k, v in _flat(stored).items() if k not in RETIRED}
  new = _flat(current)
  old.update({k: v for k, v in DEFAULTS_BEFORE.items() if k in new and k not in old})
  if 'space' not in _flat(stored):
    old.update({k: v for k, v in new.items() if k.split('.')[0] in ADDED_BLOCKS and k not in old})
  return [
    f'{field}: {old.get(field, _ABSENT)!r} -> {new.get(field, _ABSENT)!r}'
    for field in sorted(set(old) | set(new))
    if field not in MAY_CHANGE_ON_RESUME and old.get(field, _ABSENT) != new.get(field, _ABSENT)
  ]


def check_same_run(config, workdir: str, *, resuming: bool) -> None:
  """Raises ConfigError when `workdir` holds checkpoints (`resuming`, from
  the runner's checkpointer) of another config."""
  path = os.path.join(workdir, 'config.json')
  if not resuming or not os.path.exists(path):
    return  # nothing to resume: the new config starts afresh
  with open(path) as f:
    stored = json.load(f)
  # JSON turns tuples into lists; compare like with like.
  current = json.loads(json.dumps(config.to_dict()))
  diffs = differences(stored, current)
  if not diffs:
    return
  listed = '\n  '.join(diffs)
  if config.get('allow_config_change', False):
    logging.warning(
      'Resuming %s under a changed config (config.allow_config_change):\n  %s', workdir, listed
    )
    return
  raise config_check.ConfigError(
    f'config: workdir {workdir!r} holds checkpoints of another config; these fields differ '
    f'(stored -> given): {"; ".join(diffs)}. Use a new --workdir, give the stored values, or '
    'pass --config.allow_config_change=True to resume under the new ones (fields that may '
    f'change on resume: {", ".join(MAY_CHANGE_ON_RESUME)})'
  )
