"""Learning by Passing Tests (LPT, Skillearn §3, Eq. 11) on DARTS, on the core.

Stage I trains the testee's supernet weights W on D_ee^tr with the
architecture A supporting. Stage II trains the tester's data encoder E and
executor X on L(E, X, D_er^tr) + gamma * mean_d f(d, C, E) l(E, X, d) over a
test-bank batch, with the test creator C supporting. The validation stage
minimizes over A and maximizes over C the selection-weighted testee loss
sum_d f l(A, W', d) / sum_d f minus lambda * L(E', X', D_er^val), with
f = softmax(C(E(d)))[1] (Eq. 12-14). Ablations: 'test_only' drops the D_er^tr
term of Stage II (Eq. 26); 'difficulty_only' replaces the tester by one free
scalar per bank example, f = sigmoid(s_d), and drops Stage II and the lambda
term (Eq. 25). No second-order code lives here: the engine differentiates.

Data roles: the weight half of the search split is D_ee^tr and D_er^tr, and
one batch of it per step serves both; the architecture half is the test
bank D_b and D_er^val (as the paper uses the validation set for both), read
by two independent streams, so each step's tester-validation batch is drawn
apart from that step's bank batch. The bank term of Stage II is the batch
mean of f * l (Eq. 13's sum up to the constant 1/|batch|, absorbed in gamma);
as Eq. 7 writes f(d, C, E), Stage II's gradient reaches E through f too. The
encoder sees each step's two image groups in one training-mode pass, so its
BatchNorm statistics cover both.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax.data import augment as augment_lib
from skillearn_jax.data import catalog
from skillearn_jax.data import sources
from skillearn_jax.data import stream as stream_lib
from skillearn_jax.nas import tester
from skillearn_jax.skills import base
from skillearn_jax.skills import lpt_plots
from skillearn_jax.skills import nas_search
from skillearn_jax.skills import progressive

WEIGHTS, ALPHAS = nas_search.WEIGHTS, nas_search.ALPHAS
stages = progressive.stages  # P-DARTS: a search in stages
ENCODER, EXECUTOR, CREATOR, SELECTION = ('encoder', 'executor', 'creator', 'selection')
TESTEE_STATS, TESTER_STATS = 'testee_stats', 'tester_stats'
DATA = 'lpt'  # one batch dict per step: 'train', 'bank', 'tester_val'
MODES = ('full', 'test_only', 'difficulty_only')


def _per_example_ce(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def weighted_test_loss(selection, losses):
  """sum_d f(d) l(d) / sum_d f(d): the loss on the relaxed test (Eq. 9, 14)."""
  return jnp.sum(selection * losses) / jnp.sum(selection)


# -- losses ----------------------------------------------------------------------
def testee_stage_loss(net, variant=None):
  """Stage I: L(A, W, D_ee^tr), the DARTS weight loss on the 'train' batch."""
  loss = nas_search.classification_loss(
    net, weights=WEIGHTS, alphas=ALPHAS, stats=TESTEE_STATS, variant=variant
  )
  return lambda params, batch, ctx: loss(params, batch['train'], ctx)


def tester_stage_loss(encoder, executor, *, gamma: float, test_only: bool):
  """Stage II: L(E, X, D_er^tr) + gamma * mean_d f(d, C, E) l(E, X, d).

  With `test_only` (Eq. 26) the loss is the bank term alone.
  """

  def loss(params, batch, ctx):
    bank = batch['bank']
    parts = [bank] if test_only else [batch['train'], bank]
    features, stats = tester.encode(
      encoder,
      params[ENCODER],
      ctx.model_state[TESTER_STATS],
      jnp.concatenate([p['image'] for p in parts]),
      train=True,
    )
    logits = executor.apply({'params': params[EXECUTOR]}, features)
    losses = _per_example_ce(logits, jnp.concatenate([p['label'] for p in parts]))
    bank_size = bank['label'].shape[0]
    selection = tester.selection_weights(params[CREATOR], features[-bank_size:])
    test_term = jnp.mean(selection * losses[-bank_size:])
    metrics = {'test_term': test_term, 'selection_mean': selection.mean()}
    if test_only:
      value = test_term
    else:
      metrics['train_term'] = losses[:-bank_size].mean()
      value = metrics['train_term'] + gamma * test_term
    model_state = {**ctx.model_state, TESTER_STATS: stats}
    return core.LossOutput(value, model_state=model_state, metrics=metrics)

  return loss


def _variant_kwargs(variant, step, key) -> dict:
  return {} if variant is None else {'variant': variant(step, key)}


def _testee_bank_losses(net, params, bank, ctx, variant=None):
  logits, _ = net.apply(
    {'params': params[WEIGHTS], 'batch_stats': ctx.model_state[TESTEE_STATS]},
    bank['image'],
    params[ALPHAS],
    train=True,
    mutable=['batch_stats'],
    **_variant_kwargs(variant, ctx.step, ctx.key),
  )
  return _per_example_ce(logits, bank['label'])


def validation_loss(net, encoder, executor, *, weight_lambda: float, variant=None):
  """sum f l(A, W', d) / sum f - lambda L(E', X', D_er^val), f from C and E'."""

  def loss(params, batch, ctx):
    bank, held_out = batch['bank'], batch['tester_val']
    testee_losses = _testee_bank_losses(net, params, bank, ctx, variant)
    features, _ = tester.encode(
      encoder,
      params[ENCODER],
      ctx.model_state[TESTER_STATS],
      jnp.concatenate([bank['image'], held_out['image']]),
      train=True,
    )
    bank_size = bank['label'].shape[0]
    selection = tester.selection_weights(params[CREATOR], features[:bank_size])
    tester_logits = executor.apply({'params': params[EXECUTOR]}, features[bank_size:])
    tester_val_loss = _per_example_ce(tester_logits, held_out['label']).mean()
    test_loss = weighted_test_loss(selection, testee_losses)
    return core.LossOutput(
      test_loss - weight_lambda * tester_val_loss,
      metrics={
        'test_loss': test_loss,
        'plain_loss': testee_losses.mean(),
        'tester_val_loss': tester_val_loss,
        'selection_mean': selection.mean(),
      },
    )

  return loss


def difficulty_only_validation_loss(net, variant=None):
  """Eq. 25: sum_d s(d) l(A, W', d) / sum_d s(d), s(d) = sigmoid(S[d])."""

  def loss(params, batch, ctx):
    bank = batch['bank']
    testee_losses = _testee_bank_losses(net, params, bank, ctx, variant)
    selection = jax.nn.sigmoid(params[SELECTION][bank['position']])
    test_loss = weighted_test_loss(selection, testee_losses)
    return core.LossOutput(
      test_loss,
      metrics={
        'test_loss': test_loss,
        'plain_loss': testee_losses.mean(),
        'selection_mean': selection.mean(),
      },
    )

  return loss


# -- the program -----------------------------------------------------------------
def lpt_program(net, encoder, num_classes: int, config, steps_per_epoch: int):
  """The LPT program of `config.lpt.mode` for testee `net` and tester
  `encoder`; returns (program, {name: learning-rate schedule})."""
  epochs = config.num_epochs
  weights_set, weight_schedule = nas_search.weight_param_set(
    WEIGHTS, config.weights_optim, steps_per_epoch, epochs
  )
  alphas_set = nas_search.arch_param_set(ALPHAS, config.alphas_optim, steps_per_epoch)
  variant = nas_search.variant_values(config, steps_per_epoch)
  mode = config.lpt.mode
  schedules = {'weights': weight_schedule}
  # The core asks every validation set to be supporting in some stage; in
  # Eq. 25 the selection scalars are listed in Stage I, whose loss never
  # reads them, so W*(A) does not depend on S, exactly as the equation says.
  testee = core.Stage(
    'testee',
    active=[WEIGHTS],
    supporting=[ALPHAS, SELECTION] if mode == 'difficulty_only' else [ALPHAS],
    loss=testee_stage_loss(net, variant),
    data=DATA,
  )
  if mode == 'difficulty_only':
    program = core.Program(
      param_sets=[
        weights_set,
        alphas_set,
        nas_search.arch_param_set(SELECTION, config.creator_optim),
      ],
      stages=[testee],
      validation=core.Validation(
        difficulty_only_validation_loss(net, variant),
        {ALPHAS: 'minimize', SELECTION: 'maximize'},
        data=DATA,
      ),
    )
    return program, schedules
  executor = tester.make_executor(num_classes)
  encoder_set, tester_schedule = nas_search.weight_param_set(
    ENCODER, config.tester_optim, steps_per_epoch, epochs
  )
  executor_set, _ = nas_search.weight_param_set(
    EXECUTOR, config.tester_optim, steps_per_epoch, epochs
  )
  schedules['tester'] = tester_schedule
  tester_stage = core.Stage(
    'tester',
    active=[ENCODER, EXECUTOR],
    supporting=[CREATOR],
    loss=tester_stage_loss(
      encoder, executor, gamma=config.lpt.weight_gamma, test_only=mode == 'test_only'
    ),
    data=DATA,
  )
  program = core.Program(
    param_sets=[
      weights_set,
      alphas_set,
      encoder_set,
      executor_set,
      nas_search.arch_param_set(CREATOR, config.creator_optim),
    ],
    stages=[testee, tester_stage],
    validation=core.Validation(
      validation_loss(
        net, encoder, executor, weight_lambda=config.lpt.weight_lambda, variant=variant
      ),
      {ALPHAS: 'minimize', CREATOR: 'maximize'},
      data=DATA,
    ),
  )
  return program, schedules


def init_lpt(key, net, encoder, config, *, num_classes: int, image_shape, bank_size: int):
  """(params by set name, model state) of a fresh LPT program."""
  weights, alphas, testee_stats = nas_search.init_supernet(
    net, key, image_shape, nas_search.space_of(config)
  )
  params = {WEIGHTS: weights, ALPHAS: alphas}
  model_state = {TESTEE_STATS: testee_stats}
  if config.lpt.mode == 'difficulty_only':
    # s = 0: every bank example starts half selected.
    params[SELECTION] = jnp.zeros((bank_size,), jnp.float32)
    return params, model_state
  (params[ENCODER], params[EXECUTOR], params[CREATOR], model_state[TESTER_STATS]) = (
    tester.init_tester(jax.random.fold_in(key, 2), encoder, num_classes, image_shape)
  )
  return params, model_state


# -- monitoring: eval metrics and plots ------------------------------------------
class Monitor:
  """The skill's evaluate / describe / write_artifacts hooks.

  They share eval-mode testee losses and selection weights on the first
  `config.data.eval_examples` bank examples, computed once per step however
  many hooks ask.
  """

  def __init__(self, net, encoder, config, data: catalog.SearchData, steps_per_epoch: int = 1):
    self.config, self.data = config, data
    self.indices = data.architecture_indices[: config.data.eval_examples]
    self.positions = np.arange(len(self.indices), dtype=np.int32)
    self.transform = augment_lib.eval_augment(data.source.info)
    self._cache = (None, None)
    mode = config.lpt.mode
    variant = nas_search.variant_values(config, steps_per_epoch)

    def testee_losses(params, model_state, batch, step):
      logits = net.apply(
        {'params': params[WEIGHTS], 'batch_stats': model_state[TESTEE_STATS]},
        batch['image'],
        params[ALPHAS],
        train=False,
        **_variant_kwargs(variant, step, None),
      )
      return (_per_example_ce(logits, batch['label']), jnp.argmax(logits, -1) == batch['label'])

    def selection(params, model_state, batch):
      if mode == 'difficulty_only':
        return jax.nn.sigmoid(params[SELECTION][batch['position']])
      features, _ = tester.encode(
        encoder, params[ENCODER], model_state[TESTER_STATS], batch['image'], train=False
      )
      return tester.selection_weights(params[CREATOR], features)

    self._apply = jax.jit(lambda p, s, b, step: (*testee_losses(p, s, b, step), selection(p, s, b)))

  def results(self, state) -> dict:
    """Per monitored example: 'losses', 'correct', 'selection'."""
    step = int(jax.device_get(state.step))
    if self._cache[0] == step:
      return self._cache[1]
    size = self.config.data.batch_size
    batches = stream_lib.eval_batches(self.data.source, self.indices, size, self.transform)
    parts = []
    for start, batch in zip(range(0, len(self.indices), size), batches):
      position = self.positions[start : start + size]
      batch['position'] = np.pad(position, (0, size - len(position)))
      mask = batch.pop('mask')
      out = self._apply(state.params, state.model_state, batch, state.step)
      parts.append([np.asarray(x)[mask] for x in out])
    losses, correct, selection = (np.concatenate(x) for x in zip(*parts))
    result = {'losses': losses, 'correct': correct, 'selection': selection}
    self._cache = (step, result)
    return result

  def evaluate(self, state) -> dict:
    return monitor_metrics(self.results(state)) if len(self.indices) else {}

  def describe(self, state) -> dict:
    summary = nas_search.describe_alphas(state.params[ALPHAS], self.config)
    if len(self.indices):
      summary['selection_histogram'] = lpt_plots.selection_histogram(
        self.results(state)['selection']
      )
    return summary

  def write_artifacts(self, state, workdir: str, history) -> None:
    """DARTS' genotype and alpha plots, the selection weights over epochs and
    the most / least selected monitored examples."""
    nas_search.write_search_artifacts(state.params[ALPHAS], self.config, workdir, history)
    if not len(self.indices):
      return
    plots = os.path.join(workdir, 'plots')
    snapshots = [h for h in history if 'selection_histogram' in h['describe']]
    result = self.results(state)
    lpt_plots.plot_selection_over_time(
      [h['describe']['selection_histogram'] for h in snapshots]
      or [lpt_plots.selection_histogram(result['selection'])],
      [h['epoch'] for h in snapshots] or ['now'],
      os.path.join(plots, 'selection_over_time.png'),
    )
    rows = []
    for title, picks in zip(
      ('most selected', 'least selected'),
      lpt_plots.extremes(result['selection'], self.config.lpt.grid_examples),
    ):
      images, labels = self.data.source.get(self.indices[picks])
      rows.append(
        (
          title,
          sources.to_unit_float(np.asarray(images)),
          np.asarray(labels),
          result['selection'][picks],
        )
      )
    lpt_plots.plot_selection_extremes(rows, os.path.join(plots, 'selection_extremes.png'))


def monitor_metrics(result) -> dict:
  """eval/ metrics: the testee's loss on the created test and on the plain
  validation examples, its accuracy, and the mean selection weight."""
  return {
    'valid_accuracy': float(result['correct'].mean()),
    'test_loss': float(weighted_test_loss(result['selection'], result['losses'])),
    'plain_val_loss': float(result['losses'].mean()),
    'selection_mean': float(result['selection'].mean()),
  }


# -- the skill -------------------------------------------------------------------
def check_config(config) -> None:
  nas_search.check_config(config)
  config_check.one_of(config, 'lpt.mode', MODES)
  config_check.one_of(config, 'lpt.encoder', tester.ENCODERS)
  config_check.positive(config, 'lpt.weight_lambda', allow_zero=True)
  config_check.positive(config, 'lpt.weight_gamma', allow_zero=True)
  config_check.positive(config, 'lpt.grid_examples')
  config_check.positive(config, 'tester_optim.lr')
  config_check.positive(config, 'creator_optim.lr')


def build(config) -> base.SkillSetup:
  train_stream, bank_stream, info, data = nas_search.search_streams(config)
  tester_val_stream = stream_lib.BatchStream(
    data.source,
    data.architecture_indices,
    config.data.batch_size,
    (config.seed, 2),
    augment_lib.train_augment(info),
  )
  bank = data.architecture_indices
  position_of = np.full(len(data.source), -1, np.int32)
  position_of[bank] = np.arange(len(bank), dtype=np.int32)
  steps_per_epoch = min(train_stream.steps_per_epoch, bank_stream.steps_per_epoch)
  mode = config.lpt.mode
  net = nas_search.make_supernet(config, info.num_classes)
  encoder = tester.make_encoder(config.lpt.encoder)
  program, schedules = lpt_program(net, encoder, info.num_classes, config, steps_per_epoch)

  def init(key):
    return init_lpt(
      key,
      net,
      encoder,
      config,
      num_classes=info.num_classes,
      image_shape=info.image_shape,
      bank_size=len(bank),
    )

  def batches_at(step):
    bank_batch = bank_stream.batch_at(step)
    bank_batch['position'] = position_of[bank_stream.indices_at(step)]
    batch = {'train': train_stream.batch_at(step), 'bank': bank_batch}
    if mode != 'difficulty_only':
      batch['tester_val'] = tester_val_stream.batch_at(step)
    return {DATA: batch}

  monitor = Monitor(net, encoder, config, data, steps_per_epoch)

  def learning_rates(step):
    rates = {f'lr/{name}': float(s(step)) for name, s in schedules.items()}
    rates['lr/alphas'] = config.alphas_optim.lr
    if mode != 'difficulty_only':
      rates['lr/creator'] = config.creator_optim.lr
    return rates

  return base.SkillSetup(
    program=program,
    init=init,
    batches_at=batches_at,
    steps_per_epoch=steps_per_epoch,
    describe=monitor.describe,
    write_artifacts=monitor.write_artifacts,
    evaluate=monitor.evaluate,
    learning_rates=learning_rates,
    should_stop=nas_search.darts_plus_stop(config),
  )
