"""Every rule of Skillearn §2.2 refuses a program, naming stage and set."""

import optax
import pytest

from skillearn_jax import core


def _loss(params, batch, ctx):
  return sum(v for v in params.values())


def _sets(*names):
  return [core.ParamSet(n, optax.sgd(0.1), unroll_lr=0.1) for n in names]


def _program(stages, directions, names=('w', 'v', 'a', 'b')):
  return core.Program(
    param_sets=_sets(*names), stages=stages, validation=core.Validation(_loss, directions)
  )


def test_valid_program_builds():
  p = _program(
    [
      core.Stage('one', active=['w'], supporting=['a'], loss=_loss),
      core.Stage('two', active=['v'], supporting=['b', 'a'], uses=['one'], loss=_loss),
    ],
    {'a': 'minimize', 'b': 'maximize'},
  )
  assert p.validation_sets == ('a', 'b')
  assert p.validation_uses == ('one', 'two')


@pytest.mark.parametrize(
  'stages, directions, match',
  [
    (
      [core.Stage('s1', active=['w', 'a'], supporting=['a'], loss=_loss)],
      {'a': 'minimize'},
      "stage 's1': set 'a' is both active and supporting",
    ),
    (
      [
        core.Stage('s1', active=['w'], supporting=['a'], loss=_loss),
        core.Stage('s2', active=['w', 'v'], supporting=['b'], loss=_loss),
      ],
      {'a': 'minimize', 'b': 'minimize'},
      "stage 's2': set 'w' is already active in stage 's1'",
    ),
    (
      [
        core.Stage('s1', active=['w'], supporting=['a'], loss=_loss),
        core.Stage('s2', active=['v'], supporting=['w', 'b'], loss=_loss),
      ],
      {'a': 'minimize', 'b': 'minimize'},
      "stage 's2': set 'w' was learned in stage 's1' and cannot be supporting",
    ),
    (
      [core.Stage('s1', active=['w', 'v'], supporting=['a'], loss=_loss)],
      {'a': 'minimize', 'b': 'minimize'},
      "validation stage: set 'b' is supporting in no stage",
    ),
    (
      [core.Stage('s1', active=['w', 'v'], supporting=['a', 'zz'], loss=_loss)],
      {'a': 'minimize', 'b': 'minimize'},
      "stage 's1': unknown parameter set 'zz'",
    ),
    (
      [core.Stage('s1', active=['w', 'v'], supporting=['a', 'b'], loss=_loss)],
      {'a': 'minimize', 'qq': 'minimize'},
      "validation stage: unknown parameter set 'qq'",
    ),
    (
      [core.Stage('s1', active=['w', 'v'], supporting=['a', 'b'], loss=_loss)],
      {'a': 'minimize', 'b': 'upward'},
      "validation stage: set 'b' has direction 'upward'",
    ),
    (
      [core.Stage('s1', active=['w', 'v'], supporting=['a', 'b'], uses=['later'], loss=_loss)],
      {'a': 'minimize', 'b': 'minimize'},
      "stage 's1': `uses` names 'later', which is not an earlier stage",
    ),
    (
      [core.Stage('s1', active=['w'], supporting=['a', 'b'], loss=_loss)],
      {'a': 'minimize', 'b': 'minimize'},
      "parameter set 'v' is active in no stage",
    ),
    (
      [core.Stage('s1', active=['w', 'v', 'a'], supporting=['b'], loss=_loss)],
      {'a': 'minimize', 'b': 'minimize'},
      "stage 's1': set 'a' is active here and also a validation-stage set",
    ),
    (
      [core.Stage('s1', active=['w', 'v'], supporting=['a', 'b'], loss=_loss, unroll_steps=0)],
      {'a': 'minimize', 'b': 'minimize'},
      "stage 's1': unroll_steps must be",
    ),
  ],
)
def test_rule_violations_are_refused(stages, directions, match):
  with pytest.raises(core.ProgramError, match=match.replace('(', r'\(')):
    _program(stages, directions)


def test_duplicate_names_are_refused():
  with pytest.raises(core.ProgramError, match="duplicate stage name 's'"):
    _program(
      [
        core.Stage('s', active=['w'], supporting=['a', 'b'], loss=_loss),
        core.Stage('s', active=['v'], supporting=['a'], loss=_loss),
      ],
      {'a': 'minimize', 'b': 'minimize'},
    )
  with pytest.raises(core.ProgramError, match="duplicate parameter set name"):
    _program(
      [core.Stage('s', active=['w'], supporting=['a'], loss=_loss)],
      {'a': 'minimize'},
      names=('w', 'a', 'a'),
    )


def test_supporting_set_may_be_active_in_a_later_stage():
  # §2.2: supporting parameters of stage k may be active later.
  p = _program(
    [
      core.Stage('s1', active=['w'], supporting=['v', 'a'], loss=_loss),
      core.Stage('s2', active=['v'], supporting=['b'], loss=_loss),
    ],
    {'a': 'minimize', 'b': 'maximize'},
  )
  assert [s.name for s in p.stages] == ['s1', 's2']
