"""Skills: one module per learning skill, each config -> SkillSetup.

`build(config)` looks the skill up by `config.skill`; modules are imported
lazily so a ridge run never imports the NAS stack.
"""

import importlib

SKILLS = {
  'hpo_ridge': 'skillearn_jax.skills.hpo_ridge',
  'darts': 'skillearn_jax.skills.darts',
  'lpt': 'skillearn_jax.skills.lpt',
  'il': 'skillearn_jax.skills.il',
  'mtl': 'skillearn_jax.skills.mtl',
  'eval_cell': 'skillearn_jax.skills.eval_cell',
}


def build(config):
  if config.skill not in SKILLS:
    raise ValueError(f'config.skill: unknown skill {config.skill!r}; allowed: {sorted(SKILLS)}')
  return importlib.import_module(SKILLS[config.skill]).build(config)
