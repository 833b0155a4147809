"""What every NAS search skill shares: supernet losses, data streams, artifacts.

This module owns the pieces DARTS, LPT, IL and MTL each import without importing another
skill: the search space and supernet of a config (`space_of`, `make_supernet`,
`init_supernet`), the supernet classification loss under one jit per network
(`classification_loss`), the search split's weight-half and architecture-half streams
(`search_streams`), the weight (SGD) and architecture (Adam) parameter sets of the official
recipes, the genotype description and artifacts (genotype.json, cell diagrams, α heatmaps),
eval-mode accuracy, the config checks of the data, net and optimizer blocks, and the
`SkillSetup` of a search whose outcome is the α of a space (`alphas_search_setup`).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from skillearn_jax import config_check
from skillearn_jax import core
from skillearn_jax.data import augment as augment_lib
from skillearn_jax.data import catalog
from skillearn_jax.data import stream as stream_lib
from skillearn_jax.nas import cell_plot
from skillearn_jax.nas import conv
from skillearn_jax.nas import genotypes
from skillearn_jax.nas import ops
from skillearn_jax.nas import space as space_lib
from skillearn_jax.skills import base
from skillearn_jax.skills import recipes

WEIGHTS, ALPHAS = 'weights', 'alphas'


def space_of(config) -> space_lib.SearchSpace:
  """The search space `config.space` names (`darts` when absent), sized by `config.net`."""
  net, name = config.net, config.get('space', 'darts')
  shape = dict(nodes=net.nodes, multiplier=net.multiplier)
  if name == 'darts':
    return space_lib.darts(**shape)
  if name == 'pcdarts':
    return space_lib.pcdarts(k=config.pcdarts.k, **shape)
  if name == 'darts_minus':
    return space_lib.darts_minus(**shape)
  if name == 'pdarts':
    masks = config.pdarts.get('masks')
    return space_lib.pdarts(**shape, masks=json.loads(masks) if masks else None)
  raise config_check.ConfigError(
    f'config.space: {name!r} is not allowed; allowed: {space_lib.SPACES}'
  )


def make_supernet(config, num_classes: int):
  """The supernet of the config's search space, sized by its `net` block."""
  net = config.net
  return space_of(config).supernet(
    channels=net.channels,
    num_classes=num_classes,
    layers=net.layers,
    stem_multiplier=net.stem_multiplier,
    remat=bool(net.get('remat', True)),
    conv_impl=net.get('conv_impl', 'auto'),
    precision=net.get('precision', 'float32'),
  )


def variant_values(config, steps_per_epoch: int):
  """(step, key) -> the supernet's `variant` values at that step, or None for a space that
  needs none: DARTS-' auxiliary-skip coefficient, decaying linearly per epoch from
  `darts_minus.aux_start` to `darts_minus.aux_end` over the search; P-DARTS' dropout rate
  after skip-connects (`pdarts_drop_rate`) and the step's dropout key."""
  name = config.get('space', 'darts')
  epochs = config.num_epochs
  if name == 'darts_minus':
    start, end = config.darts_minus.aux_start, config.darts_minus.aux_end

    def aux(step, key):
      del key
      epoch = jnp.asarray(step) // steps_per_epoch
      return {'aux_scale': start + (end - start) * epoch / epochs}

    return aux
  if name == 'pdarts':
    p = config.pdarts

    def drop(step, key):
      epoch = jnp.asarray(step) // steps_per_epoch
      warmup = config.alphas_optim.warmup_epochs
      rate = pdarts_drop_rate(epoch, p.drop_rate, epochs, warmup, p.drop_decay)
      return {'skip_drop': rate, 'key': key}

    return drop
  return None


def pdarts_drop_rate(epoch, rate: float, epochs: int, warmup_epochs: int, decay: float):
  """P-DARTS' dropout rate after skip-connects at `epoch` (0-based) of a stage: during the
  warm-up, rate · (E − e − 1) / E; after it, rate · exp(−decay · (e − warm-up))."""
  epoch = jnp.asarray(epoch, jnp.float32)
  return jnp.where(
    epoch < warmup_epochs,
    rate * (epochs - epoch - 1) / epochs,
    rate * jnp.exp(-decay * (epoch - warmup_epochs)),
  )


def merged_params(params, names: str | Sequence[str]):
  """The network parameters held in set `names`, or merged from several sets
  (e.g. an encoder set and a head set that together form one network)."""
  if isinstance(names, str):
    return params[names]
  merged = {}
  for name in names:
    merged.update(params[name])
  return merged


def _jit_train_apply(net):
  # Its derivative is a custom VJP whose forward (apply and jax.vjp) and
  # backward are jits too: every gradient in a step binds the same traced
  # forward and backward instead of linearizing and transposing the network
  # again. XLA still inlines each use and drops the cotangents it does not
  # need; inside core.gradient_loop's one body, `grad_gates` skips them.
  def apply_with_gates(variables, images, alphas, grad_gates, variant):
    kwargs = {} if grad_gates is None else {'grad_gates': grad_gates}
    if variant is not None:
      kwargs['variant'] = variant
    return net.apply(variables, images, alphas, train=True, mutable=['batch_stats'], **kwargs)

  apply = jax.jit(apply_with_gates)
  forward_and_vjp = jax.jit(lambda *args: jax.vjp(apply, *args))
  backward = jax.jit(lambda vjp_fn, cotangent: vjp_fn(cotangent))

  @jax.custom_vjp
  def shared(variables, images, alphas, grad_gates, variant):
    return apply(variables, images, alphas, grad_gates, variant)

  shared.defvjp(forward_and_vjp, backward)
  return lambda variables, images, alphas, grad_gates=None, variant=None: shared(
    variables, images, alphas, grad_gates, variant
  )


_shared_train_apply = functools.lru_cache(maxsize=64)(_jit_train_apply)


def _train_apply(net):
  """`net.apply` in training mode under one jit per network configuration.

  The inner jit traces the network once per input shape, and every
  derivative of the step is taken of that one jaxpr instead of re-running
  Flax's Python for each (lowering a DARTS-2nd step got ~2x faster). It is
  shared by every loss of an equal network (Flax modules compare by their
  fields): the learners' stages of interleaving learning, say, which each
  name other parameter sets. A module with an unhashable field (a list of
  primitives, say) gets its own jit.
  """
  try:
    hash(net)
  except TypeError:
    return _jit_train_apply(net)
  return _shared_train_apply(net)


def grad_gates(needs_grad, weight_sets: Sequence[str], alphas: str):
  """The supernet's `grad_gates` from a LossContext's `needs_grad` (None: all
  gradients needed, nothing gated)."""
  if needs_grad is None:
    return None
  needed = [needs_grad[n] for n in weight_sets if n in needs_grad]
  return {
    'weights': functools.reduce(jnp.logical_or, needed) if needed else jnp.asarray(True),
    'alphas': needs_grad.get(alphas, jnp.asarray(True)),
  }


def classification_loss(
  net, *, weights: str | Sequence[str], alphas: str, stats: str, variant=None
):
  """loss(params, batch, ctx) of a supernet learner in training mode.

  `weights`/`alphas` name the parameter sets (`weights` may name several
  sets whose dicts merge into the network's parameters), `stats` the
  model-state entry holding this learner's BatchNorm statistics; `variant`
  (from `variant_values`) gives the space's per-step values.
  """

  apply = _train_apply(net)
  weight_sets = [weights] if isinstance(weights, str) else list(weights)
  # The supernet skips the gradients a step discards; a network without
  # `grad_gates` (a test's linear testee, say) computes them all.
  gates_supported = 'grad_gates' in inspect.signature(type(net).__call__).parameters

  def loss(params, batch, ctx):
    variables = {'params': merged_params(params, weights), 'batch_stats': ctx.model_state[stats]}
    gates = grad_gates(ctx.needs_grad, weight_sets, alphas) if gates_supported else None
    values = variant(ctx.step, ctx.key) if variant else None
    logits, updates = apply(variables, batch['image'], params[alphas], gates, values)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    model_state = dict(ctx.model_state)
    model_state[stats] = updates['batch_stats']
    return core.LossOutput(ce, model_state=model_state, metrics={'accuracy': acc})

  return core.reads_needs_grad(loss) if gates_supported else loss


def search_streams(config, *, dataset: str | None = None, seed_offset: int = 0):
  """(weight-half stream, architecture-half stream, source info)."""
  d = config.data
  data = catalog.search_data(
    dataset or d.name, train_portion=d.train_portion, split=d.split, data_dir=d.data_dir or None
  )
  info = data.source.info
  aug = augment_lib.train_augment(info)
  seed = config.seed + seed_offset
  weight_stream = stream_lib.BatchStream(
    data.source, data.weight_indices, d.batch_size, 2 * seed, aug
  )
  arch_stream = stream_lib.BatchStream(
    data.source, data.architecture_indices, d.batch_size, 2 * seed + 1, aug
  )
  return weight_stream, arch_stream, info, data


def weight_param_set(name: str, optim, steps_per_epoch: int, epochs: int):
  schedule = recipes.per_epoch_cosine(optim.lr, optim.lr_min, epochs, steps_per_epoch)
  return core.ParamSet(
    name,
    recipes.sgd_recipe(
      schedule, momentum=optim.momentum, weight_decay=optim.weight_decay, clip=optim.clip
    ),
    unroll_lr=schedule,
    unroll_momentum=optim.momentum,
    unroll_weight_decay=optim.weight_decay,
  ), schedule


def arch_param_set(name: str, optim, steps_per_epoch: int = 1):
  """The architecture set's ParamSet: torch's Adam with coupled L2; with
  `optim.warmup_epochs` > 0 its updates stay zero (and Adam's moments untouched) for that many
  epochs, as PC-DARTS and P-DARTS train the weights alone first."""
  tx = recipes.adam_recipe(
    optim.lr,
    b1=optim.b1,
    b2=optim.b2,
    weight_decay=optim.weight_decay,
    clip=optim.get('clip', 0.0),
  )
  warmup_steps = int(optim.get('warmup_epochs', 0)) * steps_per_epoch
  if warmup_steps > 0:
    tx = optax.transforms.conditionally_mask(tx, lambda count: count >= warmup_steps)
  return core.ParamSet(name, tx)


def genotype_of(alphas, config) -> genotypes.Genotype:
  return space_of(config).genotype(alphas)


def describe_alphas(alphas, config) -> dict:
  return {
    'genotype': genotypes.genotype_to_dict(genotype_of(alphas, config)),
    'alphas': jax.tree_util.tree_map(lambda v: np.asarray(v).tolist(), dict(alphas)),
  }


def write_search_artifacts(alphas, config, workdir: str, history) -> None:
  """genotype.json, cell diagrams and the alpha heatmaps over time."""
  space = space_of(config)
  genotype = space.genotype(alphas)
  genotypes.save_genotype(genotype, os.path.join(workdir, 'genotype.json'))
  plots = os.path.join(workdir, 'plots')
  os.makedirs(plots, exist_ok=True)
  cell_plot.plot_genotype(genotype, plots, prefix='cell_')
  snapshots = [h for h in history if 'alphas' in h['describe']]
  for cell in space.cell_types:
    cell_plot.plot_alpha_heatmaps(
      [np.asarray(h['describe']['alphas'][cell]) for h in snapshots] or [np.asarray(alphas[cell])],
      os.path.join(plots, f'alpha_{cell}.png'),
      primitives=space.primitives,
      steps=[f'epoch {h["epoch"]}' for h in snapshots] or None,
      title=f'softmax(α_{cell})',
    )


def eval_apply(net):
  """The jitted eval-mode forward pass (variables, alphas, images[, variant]) -> logits;
  build it once per network and hand it to `accuracy_on` to compile once."""

  def apply(variables, alphas, images, variant=None):
    kwargs = {} if variant is None else {'variant': variant}
    return net.apply(variables, images, alphas, train=False, **kwargs)

  return jax.jit(apply)


def accuracy_on(net, variables_fn, alphas, batches, apply=None, variant=None) -> float:
  """Eval-mode accuracy over padded, masked batches (`variant`: the space's values)."""
  apply = apply or eval_apply(net)
  correct = total = 0.0
  for batch in batches:
    logits = apply(variables_fn(), alphas, batch['image'], variant)
    hit = (np.argmax(np.asarray(logits), -1) == batch['label']) & batch['mask']
    correct += float(hit.sum())
    total += float(batch['mask'].sum())
  return correct / max(total, 1.0)


def check_config(config) -> None:
  config_check.positive(config, 'data.batch_size')
  config_check.positive(config, 'data.eval_examples', allow_zero=True)
  if not 0.0 < config.data.train_portion < 1.0:
    raise config_check.ConfigError(
      f'config.data.train_portion: {config.data.train_portion!r} is not allowed; must lie in (0, 1)'
    )
  for field in ('channels', 'layers', 'nodes', 'multiplier', 'stem_multiplier'):
    config_check.positive(config, f'net.{field}')
  config_check.one_of(config, 'net.conv_impl', conv.CONV_IMPLS)
  if 'precision' in config.net:
    config_check.one_of(config, 'net.precision', ops.PRECISIONS)
  check_optimizers(config)
  if config.net.multiplier > config.net.nodes:
    raise config_check.ConfigError(
      f'config.net.multiplier: {config.net.multiplier} is not allowed; '
      f'must be <= config.net.nodes ({config.net.nodes})'
    )
  check_space(config)


def check_space(config) -> None:
  """The search space and its variant's knobs, each refused with its field and what is
  allowed."""
  if 'space' not in config:
    return
  config_check.one_of(config, 'space', space_lib.SPACES)
  warmup = config.alphas_optim.get('warmup_epochs', 0)
  if not 0 <= warmup < config.num_epochs:
    raise config_check.ConfigError(
      f'config.alphas_optim.warmup_epochs: {warmup!r} is not allowed; must lie in '
      f'[0, config.num_epochs = {config.num_epochs}) so that α trains at all'
    )
  if config.space == 'pcdarts':
    k, channels = config.pcdarts.k, config.net.channels
    if k < 1 or channels % k or (channels // k) % 2:
      fits = tuple(d for d in range(1, channels + 1) if not channels % d and not channels // d % 2)
      raise config_check.ConfigError(
        f'config.pcdarts.k: {k!r} is not allowed with config.net.channels = {channels}; k must '
        'divide the channels into an even number per part (the mixed op sees channels / k, '
        f'which a stride-2 skip-connect halves); allowed here: {fits}'
      )
  if config.space == 'darts_minus':
    for field in ('aux_start', 'aux_end'):
      config_check.positive(config, f'darts_minus.{field}', allow_zero=True)
  if config.space == 'pdarts':
    check_pdarts(config)
  config_check.positive(config, 'darts_plus.max_skips', allow_zero=True, meaning='0: no limit')
  config_check.positive(config, 'darts_plus.stable_epochs', allow_zero=True, meaning='0: never')


def check_pdarts(config) -> None:
  p = config.pdarts
  lengths = {f: len(p[f]) for f in ('layers', 'keep', 'drop_rates')}
  if len(set(lengths.values())) != 1 or not lengths['layers']:
    raise config_check.ConfigError(
      f'config.pdarts: the stage lists must have one entry per stage, the same number each; '
      f'got {lengths}'
    )
  ops_count = len(space_of(config).primitives)
  keep = list(p.keep)
  last_stage = keep[-2] if len(keep) > 1 else ops_count
  if (
    keep[-1] != 1
    or any(not 1 <= k <= ops_count for k in keep)
    or keep != sorted(keep)[::-1]
    or last_stage < 3
  ):
    raise config_check.ConfigError(
      f'config.pdarts.keep: {tuple(keep)!r} is not allowed; ops kept per edge after each stage '
      f'must not grow, lie in 1..{ops_count} and end at 1 (the final cell), with >= 3 in the '
      "last stage (room to replace a skip-connect beside 'none'), e.g. (5, 3, 1)"
    )
  if any(layers < 1 for layers in p.layers):
    raise config_check.ConfigError(
      f'config.pdarts.layers: {tuple(p.layers)!r} is not allowed; each stage needs >= 1 cell'
    )
  if any(not 0.0 <= r < 1.0 for r in p.drop_rates):
    raise config_check.ConfigError(
      f'config.pdarts.drop_rates: {tuple(p.drop_rates)!r} is not allowed; each must lie in [0, 1)'
    )
  config_check.positive(config, 'pdarts.drop_decay', allow_zero=True)
  config_check.positive(
    config, 'pdarts.max_skips', allow_zero=True, meaning='skip-connects in the final normal cell'
  )


def check_optimizers(config) -> None:
  """The weight (SGD) and architecture (Adam) recipes' fields."""
  config_check.positive(config, 'weights_optim.lr')
  config_check.positive(config, 'weights_optim.lr_min', allow_zero=True)
  if config.weights_optim.lr_min > config.weights_optim.lr:
    raise config_check.ConfigError(
      f'config.weights_optim.lr_min: {config.weights_optim.lr_min!r} is not '
      f'allowed; must be <= config.weights_optim.lr '
      f'({config.weights_optim.lr!r})'
    )
  config_check.in_unit_interval(config, 'weights_optim.momentum')
  config_check.positive(config, 'weights_optim.weight_decay', allow_zero=True)
  config_check.positive(
    config, 'weights_optim.clip', allow_zero=True, meaning='0 turns gradient clipping off'
  )
  config_check.positive(config, 'alphas_optim.lr')
  config_check.in_unit_interval(config, 'alphas_optim.b1')
  config_check.in_unit_interval(config, 'alphas_optim.b2')
  config_check.positive(config, 'alphas_optim.weight_decay', allow_zero=True)
  if 'clip' in config.alphas_optim:
    config_check.positive(config, 'alphas_optim.clip', allow_zero=True, meaning='0: no clipping')


def init_supernet(net, key, image_shape, space: space_lib.SearchSpace | None = None):
  """(weights, alphas, batch_stats) of a fresh supernet `net`, its α drawn by `space` (by
  default the space a `SearchNetwork` was built from)."""
  space = space or space_lib.of_network(net)
  alphas = space.init_arch(jax.random.fold_in(key, 1))
  sample = jnp.zeros((2, *image_shape), jnp.float32)
  # Jitted: eager init dispatches every op of the scanned cells one by one.
  variant = space.init_variant()
  kwargs = {'variant': variant} if variant else {}
  variables = jax.jit(lambda k, x, a: net.init(k, x, a, train=False, **kwargs))(
    jax.random.fold_in(key, 0), sample, alphas
  )
  return variables['params'], alphas, variables['batch_stats']


def arch_arrays(arch) -> dict:
  """Architecture parameters as arrays, from arrays or the nested lists of a description."""
  return jax.tree_util.tree_map(jnp.asarray, dict(arch), is_leaf=lambda x: isinstance(x, list))


def alpha_ranking(space: space_lib.SearchSpace, alphas) -> list:
  """Per cell type and edge, the learnable ops (not `none`, still on) from strongest to
  weakest: what DARTS+ watches for stability."""
  weights = space.op_weights(arch_arrays(alphas))
  ranking = []
  for cell in space.cell_types:
    mask = space.mask(cell)
    w = np.asarray(weights[cell])
    for edge in range(space.num_edges):
      ops_on = [
        o for o, p in enumerate(space.primitives) if p != genotypes.NONE_OP and mask[edge, o]
      ]
      ranking.append(tuple(sorted(ops_on, key=lambda o: -w[edge, o])))
  return ranking


def darts_plus_stop(config):
  """DARTS+' early stop (Liang et al., 2019) as a `should_stop(history)`, or None when
  `darts_plus.enabled` is off: stop once the normal cell's genotype holds
  `darts_plus.max_skips` skip-connects (0: never), or once the α ranking of every edge has
  held for `darts_plus.stable_epochs` epochs (0: never)."""
  plus = config.get('darts_plus')
  if not plus or not plus.enabled:
    return None
  space = space_of(config)

  def should_stop(history):
    latest = history[-1]['describe']
    skips = sum(op == 'skip_connect' for op, _ in latest['genotype']['normal'])
    if plus.max_skips > 0 and skips >= plus.max_skips:
      return (
        f'the normal cell holds {skips} skip-connects (darts_plus.max_skips = {plus.max_skips})'
      )
    n = plus.stable_epochs
    if n > 0 and len(history) > n:
      ranks = [alpha_ranking(space, h['describe']['alphas']) for h in history[-(n + 1) :]]
      if all(r == ranks[0] for r in ranks[1:]):
        return f'the α ranking has held for {n} epochs (darts_plus.stable_epochs = {n})'
    return None

  return should_stop


def alphas_search_setup(
  config, *, program, init, batches_at, per_epoch, schedule, evaluate
) -> base.SkillSetup:
  """The SkillSetup of a search whose outcome is the α of the config's space: genotype
  description, genotype/α plots and the logged learning rates."""
  return base.SkillSetup(
    program=program,
    init=init,
    batches_at=batches_at,
    steps_per_epoch=per_epoch,
    describe=lambda state: describe_alphas(state.params[ALPHAS], config),
    write_artifacts=lambda state, workdir, history: write_search_artifacts(
      state.params[ALPHAS], config, workdir, history
    ),
    evaluate=evaluate,
    learning_rates=lambda step: {
      'lr/weights': float(schedule(step)),
      'lr/alphas': config.alphas_optim.lr,
    },
    should_stop=darts_plus_stop(config),
  )


def valid_accuracy(config, net, data, info, steps_per_epoch: int = 1):
  """state -> {'valid_accuracy'}: the single supernet's eval-mode accuracy on the first
  `data.eval_examples` of the architecture half (empty when that is 0)."""
  eval_indices = data.architecture_indices[: config.data.eval_examples]
  eval_transform = augment_lib.eval_augment(info)
  apply = eval_apply(net)  # one compile for every epoch's evaluation
  variant = variant_values(config, steps_per_epoch)

  def evaluate(state):
    if not len(eval_indices):
      return {}
    batches = stream_lib.eval_batches(
      data.source, eval_indices, config.data.batch_size, eval_transform
    )
    variables = lambda: {
      'params': state.params[WEIGHTS],
      'batch_stats': state.model_state['batch_stats'],
    }
    return {
      'valid_accuracy': accuracy_on(
        net,
        variables,
        state.params[ALPHAS],
        batches,
        apply=apply,
        variant=variant and variant(state.step, None),
      )
    }

  return evaluate
