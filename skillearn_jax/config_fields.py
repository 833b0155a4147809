"""What every config field means and which values it allows: the table behind `--describe`.

This module owns one line of meaning and the allowed values of each field a config of this
library may hold (`FIELDS`, by dotted name; `*` stands for any block, e.g. the optimizers
`weights_optim`, `tester_optim` ...). An allowed value written as a bound (`> 0`, `>= 0`,
`>= -1`), an interval (`[0, 1)`, `[0, 1]`) or a choice (`a | b`) is also checked
(`check_ranges`) before anything compiles, so a numeric field never goes unchecked; other
entries (`path`, `text`, `bool` ...) only describe. A leaf module, like `config_check`:
every layer may read it. Tests keep it whole: every field of every shipped config has an
entry, and every choice listed equals the registry it names.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Iterator, NamedTuple, Optional

from skillearn_jax import config_check


class Field(NamedTuple):
  allowed: str
  meaning: str


_OPTIM = {
  '*optim.lr': Field('> 0', 'learning rate (the peak of its schedule)'),
  '*optim.lr_min': Field('>= 0', 'learning rate at the end of the cosine schedule'),
  '*optim.momentum': Field('[0, 1)', 'SGD momentum'),
  '*optim.weight_decay': Field('>= 0', 'L2 weight decay added to the gradient'),
  '*optim.clip': Field('>= 0', 'gradient global-norm clip (0: none)'),
  '*optim.b1': Field('[0, 1)', "Adam's first-moment decay"),
  '*optim.b2': Field('[0, 1)', "Adam's second-moment decay"),
  '*optim.warmup_epochs': Field('>= 0', 'epochs the architecture stays frozen first (DARTS-)'),
  '*optim.schedule': Field('cosine | exponential', 'learning-rate schedule'),
  '*optim.decay_rate': Field('> 0', 'per-epoch factor of the exponential schedule'),
}

FIELDS: dict[str, Field] = {
  # What runs, and how it is seeded.
  'experiment': Field(
    'hpo_ridge | darts | lpt | il | mtl | eval_cell | l2t',
    'the registered experiment this config runs',
  ),
  'seed': Field('>= 0', 'root of every random number of the run'),
  'rng_impl': Field('threefry2x32 | rbg | unsafe_rbg', "JAX PRNG implementation of the run's keys"),
  'num_epochs': Field('> 0', 'epochs to train'),
  'max_steps': Field('>= -1', 'stop after this many steps (-1: run every epoch); resumable'),
  # Records and resume.
  'log_every_steps': Field('> 0', 'steps between metric lines (epoch ends always log)'),
  'checkpoint_every_steps': Field('> 0', 'steps between checkpoints (epoch ends always save)'),
  'keep_checkpoints': Field('> 0', 'newest checkpoints kept'),
  'eval_every_epochs': Field('> 0', 'epochs between held-out evaluations'),
  'compilation_cache_dir': Field('path, or empty', "XLA's persistent cache ('' turns it off)"),
  'allow_config_change': Field(
    'True | False', 'resume a workdir under a config that differs from its own'
  ),
  # Hypergradients (the validation stage).
  'hypergradient': Field(
    'exact | finite_difference | first_order | implicit | implicit_cg',
    "how the validation stage differentiates through the earlier stages' solutions",
  ),
  'order': Field(
    'validation_first | stages_first',
    'update the validated sets before the stages (as DARTS does) or after',
  ),
  'exact_mode': Field(
    'forward_over_reverse | reverse_over_reverse', 'how exact hypergradients take second order'
  ),
  'fd_epsilon': Field('> 0', "finite-difference step, scaled by 1/||v|| as in DARTS"),
  'neumann_steps': Field('>= 0', 'terms of the Neumann series of the implicit method'),
  'cg_steps': Field('> 0', 'conjugate-gradient iterations of implicit_cg'),
  # Data.
  'data.name': Field(
    'digits, a tfds name (cifar10, cifar100, imagenet2012, mnist ...), or array_dir:PATH',
    'dataset',
  ),
  'data.data_dir': Field('path, or empty', "tfds data directory ('': tfds' default)"),
  'data.split': Field('text', 'the tfds split searched on'),
  'data.batch_size': Field('> 0', 'examples per step (all devices together)'),
  'data.eval_batch_size': Field('> 0', 'examples per held-out evaluation batch'),
  'data.train_portion': Field('[0, 1]', 'share of the split that trains; the rest validates'),
  'data.train_examples': Field('>= 0', 'use only the first N training examples (0: all)'),
  'data.eval_examples': Field('>= 0', 'use only the first N held-out examples (0: all)'),
  'data.cutout_length': Field('>= 0', 'side of the cutout square (0: no cutout)'),
  'data.color_jitter': Field('True | False', 'ImageNet colour jitter'),
  'data.image_size': Field('> 0', 'ImageNet crop side'),
  'data.resize_size': Field('> 0', 'ImageNet resize side before the centre crop'),
  # Networks.
  'net.channels': Field('> 0', 'initial channels C'),
  'net.layers': Field('> 0', 'cells stacked'),
  'net.nodes': Field('> 0', 'intermediate nodes per cell'),
  'net.multiplier': Field('> 0', 'nodes concatenated into a cell output (<= nodes)'),
  'net.stem_multiplier': Field('> 0', "the stem's channels over C"),
  'net.conv_impl': Field(
    'auto | cpu_fast | xla', 'convolutions: the XLA:CPU fast path, lax (cuDNN), or by backend'
  ),
  'net.precision': Field(
    'float32 | bfloat16',
    'activations and convolutions in this type; parameters, optimizer states, alphas, BN '
    'statistics and losses stay float32',
  ),
  'net.remat': Field(
    'True | False', 'recompute cell activations in the backward pass (less memory)'
  ),
  'net.network': Field('cifar | imagenet', 'evaluation network family'),
  'net.auxiliary_weight': Field('>= 0', 'weight of the auxiliary head loss (0: no head)'),
  'net.drop_path_prob': Field('[0, 1)', 'final drop-path probability (ramped linearly)'),
  'label_smoothing': Field('[0, 1)', 'label smoothing of the evaluation loss'),
  'genotype': Field('built-in name or genotype.json path', 'the cell evaluated'),
  # Search spaces and DARTS-family variants.
  'space': Field('darts | pdarts | pcdarts | darts_minus', 'search space variant'),
  'pcdarts.k': Field('> 0', 'PC-DARTS: 1/K of the channels go through the ops'),
  'darts_minus.aux_start': Field('>= 0', 'DARTS-: auxiliary skip weight at the start'),
  'darts_minus.aux_end': Field('>= 0', 'DARTS-: auxiliary skip weight at the end'),
  'darts_plus.enabled': Field('True | False', 'DARTS+: stop the search early'),
  'darts_plus.max_skips': Field('>= 0', 'DARTS+: stop once a cell has this many skips (0: off)'),
  'darts_plus.stable_epochs': Field(
    '>= 0', 'DARTS+: stop once the ranking of alphas held this long (0: off)'
  ),
  'pdarts.layers': Field('tuple of ints > 0', 'P-DARTS: cells of each stage'),
  'pdarts.keep': Field('tuple of ints > 0', 'P-DARTS: ops kept per edge after each stage'),
  'pdarts.drop_rates': Field('tuple in [0, 1)', 'P-DARTS: skip dropout of each stage'),
  'pdarts.drop_decay': Field('>= 0', 'P-DARTS: decay of the skip dropout over a stage'),
  'pdarts.max_skips': Field('>= 0', 'P-DARTS: skips allowed in the final normal cell'),
  'pdarts.stage': Field('>= 0', 'P-DARTS: which stage this is (set by the stages)'),
  'pdarts.drop_rate': Field('[0, 1)', "P-DARTS: this stage's skip dropout (set by the stages)"),
  'pdarts.masks': Field('text', "P-DARTS: this stage's op masks (set by the stages)"),
  # Learning by Passing Tests.
  'lpt.mode': Field('full | test_only | difficulty_only', 'which LPT program'),
  'lpt.encoder': Field('tiny | resnet18 | resnet50', "the test creator's encoder"),
  'lpt.weight_lambda': Field('>= 0', 'LPT: weight of the tester-learner interaction'),
  'lpt.weight_gamma': Field('>= 0', 'LPT: weight of the meaningfulness term'),
  'lpt.grid_examples': Field('> 0', 'LPT: examples per side of the hardest/easiest test grids'),
  # Interleaving Learning and multi-task learning.
  'il.tasks': Field('comma-separated dataset names', 'IL: the learners, in passing order'),
  'il.rounds': Field('> 0', 'IL: rounds the encoder goes around the learners'),
  'il.lam': Field('>= 0', 'IL: coupling of consecutive learners (lambda)'),
  'il.coupling': Field(
    'sum | mean', "IL: lambda times the squared distance (the papers'), or its mean per weight"
  ),
  'mtl.tasks': Field('comma-separated dataset names', 'MTL: the tasks trained together'),
  'mtl.train_tradeoff': Field('>= 0', 'MTL: weight of the second task in training'),
  'mtl.val_tradeoff': Field('>= 0', 'MTL: weight of the second task in validation'),
  # Ridge hyperparameter optimisation (the hypergradient check with a closed form).
  'ridge.dim': Field('> 0', 'features'),
  'ridge.n_train': Field('> 0', 'training examples'),
  'ridge.n_val': Field('> 0', 'validation examples'),
  'ridge.noise': Field('>= 0', 'label noise std'),
  'ridge.unroll_steps': Field('> 0', 'gradient steps of the inner stage per outer step'),
  'ridge.weight_lr': Field('> 0', 'inner learning rate'),
  'ridge.hyper_lr': Field('> 0', 'outer learning rate'),
  'ridge.init_log_lam': Field('any number', 'initial log regularisation strength'),
  'ridge.xi': Field('> 0', 'one-step unroll learning rate'),
  # Learning to Teach (skills/l2t_run.py): a teacher trained on episodes of fresh students,
  # then teaching new ones against the baselines.
  'data.teach_name': Field('empty, or a dataset name', "stage 2's dataset (transfer across data)"),
  'data.test_split': Field('empty, train, test or all', "test split ('': carved from data.split)"),
  'data.split_seed': Field('>= 0', 'seed of the one shuffle that cuts the split'),
  'data.dev_examples': Field('> 0', "L2T: held-out examples of the reward's accuracy checks"),
  'data.test_examples': Field('>= 0', 'L2T: test examples (0: all of test_split)'),
  '*student.arch': Field('mlp | cnn | resnet', 'L2T student architecture'),
  '*student.hidden': Field('tuple of ints > 0', 'L2T MLP student widths'),
  '*student.depth': Field('8, 14, 20, 32, 44, 56 or 110', 'L2T ResNet student depth (6n+2)'),
  '*student.optimizer': Field('sgd | momentum | adam', 'L2T student optimizer'),
  '*student.lr': Field('> 0', 'L2T student learning rate'),
  '*student.momentum': Field('[0, 1)', "L2T student momentum (optimizer 'momentum')"),
  'l2t.stage': Field('empty, teacher or student', "run one stage alone ('': both, chained)"),
  'l2t.batch_size': Field('> 0', 'M: examples per student step'),
  'l2t.pool_factor': Field('> 0', 'candidates drawn per step, as a multiple of M'),
  'l2t.horizon': Field('> 0', "T': the reward's iteration cap"),
  'l2t.tau': Field('[0, 1)', "target held-out accuracy of the teacher's reward"),
  'l2t.teach_tau': Field('[0, 1)', "stage 2's target accuracy (0: l2t.tau)"),
  'l2t.check_every': Field('> 0', 'student steps between held-out accuracy checks'),
  'l2t.parallel_episodes': Field(
    '> 0, a multiple of the device count',
    'episodes (fresh students) vmapped per teacher step, split evenly over the devices',
  ),
  'l2t.teacher_steps': Field('> 0', 'REINFORCE updates of the teacher'),
  'l2t.teacher_hidden': Field('> 0', "the policy's hidden width"),
  'l2t.keep_bias': Field('any number', "the policy's output bias at init (2: keeps ~88%)"),
  'l2t.teacher_optimizer': Field('adam | sgd', 'teacher optimizer'),
  'l2t.teacher_lr': Field('> 0', 'teacher learning rate'),
  'l2t.baseline_decay': Field('[0, 1)', "decay of REINFORCE's moving-average reward baseline"),
  'l2t.loss_scale': Field('>= 0', 'losses in the features divided by it (0: log classes)'),
  'l2t.student_iterations': Field('> 0', 'steps of each student taught in stage 2'),
  'l2t.chunk': Field('> 0', 'stage-2 student steps per loop step (checkpoint granularity)'),
  'l2t.seeds': Field('> 0', 'students per method in stage 2'),
  'l2t.methods': Field('subset of l2t, noteach, spl, randteach', 'methods compared in stage 2'),
  'l2t.spl_start': Field('[0, 1)', 'Self-Paced: share of the pool kept at the start'),
  'l2t.spl_ramp': Field('> 0', 'Self-Paced: keeps all at spl_ramp x horizon'),
  'l2t.rand_drop_ratio': Field('[0, 1), or -1', "RandTeach's drop probability (-1: the teacher's)"),
  'l2t.teacher_path': Field('path, or empty', "stage 2's teacher.npz (set by the chain)"),
  **_OPTIM,
}


def lookup(name: str) -> Optional[Field]:
  """The entry of dotted field `name` (exact first, then a `*` pattern), or None."""
  if name in FIELDS:
    return FIELDS[name]
  for pattern, field in FIELDS.items():
    if '*' in pattern and fnmatch.fnmatchcase(name, pattern):
      return field
  return None


def leaves(config, prefix: str = '') -> Iterator[tuple[str, Any]]:
  """(dotted name, value) of every leaf field of a config (or dict), in order."""
  for key, value in config.items():
    name = f'{prefix}{key}'
    if hasattr(value, 'items'):
      yield from leaves(value, name + '.')
    else:
      yield name, value


def _bound(allowed: str) -> Optional[float]:
  for sign in ('>= ', '> '):
    if allowed.startswith(sign):
      try:
        return float(allowed[len(sign) :])
      except ValueError:
        return None
  return None


def check_ranges(config) -> None:
  """Every field of `config` whose entry states a bound, interval or choice, checked;
  ConfigError names the first one out of range."""
  for name, value in leaves(config):
    field = lookup(name)
    if field is None or isinstance(value, bool):
      continue
    allowed = field.allowed
    bound = _bound(allowed)
    if bound is not None and isinstance(value, (int, float)):
      if not math.isfinite(value):
        raise config_check.ConfigError(
          f'config.{name}: {value!r} is not allowed; must be a finite number'
        )
      if value < bound or (allowed.startswith('> ') and value == bound):
        raise config_check.ConfigError(
          f'config.{name}: {value!r} is not allowed; must be {allowed}'
        )
    elif allowed in ('[0, 1)', '[0, 1]') and isinstance(value, (int, float)):
      if not (0 <= value < 1 or (allowed == '[0, 1]' and value == 1)):
        raise config_check.ConfigError(
          f'config.{name}: {value!r} is not allowed; must lie in {allowed}'
        )
    elif ' | ' in allowed and ':' not in allowed and isinstance(value, str):
      choices = tuple(allowed.split(' | '))
      if value not in choices:
        raise config_check.ConfigError(
          f'config.{name}: {value!r} is not allowed; allowed: {choices}'
        )
