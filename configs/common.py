"""Fields every experiment config shares: seed, hypergradient, run cadence.

`base_config()` returns the fields of every run with their defaults and
`program_config()` adds a Skillearn program's; each config file adds its
experiment's own block. Allowed values are listed in
the experiments (`skillearn_jax.skills.check`), which refuse bad values before any
compile.
"""

import ml_collections


def base_config(experiment: str) -> ml_collections.ConfigDict:
  """The fields of every run: which experiment, the seed, how far and how often."""
  c = ml_collections.ConfigDict()
  c.experiment = experiment  # a name in skillearn_jax.skills.EXPERIMENTS
  c.seed = 0
  # The root key is jax.random.key(seed, impl=rng_impl); init folds in 0, step s folds in 1
  # then s. threefry2x32 is JAX's default; rbg compiles much faster on CPU.
  c.rng_impl = 'threefry2x32'  # threefry2x32 | rbg | unsafe_rbg
  c.num_epochs = 1
  c.max_steps = -1  # > 0: stop after this many steps
  c.log_every_steps = 10
  c.checkpoint_every_steps = 100
  c.keep_checkpoints = 2
  c.compilation_cache_dir = '~/.cache/skillearn_jax/xla'  # '' turns it off
  # True: resume a workdir's checkpoints under a config that differs from
  # its config.json (seed, data, net, optimizer...); refused otherwise.
  c.allow_config_change = False
  return c


def program_config(experiment: str) -> ml_collections.ConfigDict:
  """`base_config` plus the fields of a Skillearn program: how the hypergradient is taken."""
  c = base_config(experiment)
  c.hypergradient = 'exact'  # exact | finite_difference | first_order | implicit | implicit_cg
  c.order = 'validation_first'  # validation_first | stages_first
  # how exact and implicit hypergradients take second derivatives (same
  # numbers; forward over reverse needs less memory and compiles faster):
  # forward_over_reverse | reverse_over_reverse
  c.exact_mode = 'forward_over_reverse'
  c.fd_epsilon = 0.01
  c.neumann_steps = 10
  c.cg_steps = 10  # implicit_cg's conjugate-gradient iterations per stage
  return c


def darts_search_blocks(
  c: ml_collections.ConfigDict, *, dataset='cifar10', num_epochs=50
) -> ml_collections.ConfigDict:
  """Data, supernet and optimizer blocks of the official DARTS search.

  Weights: SGD 0.025, momentum 0.9, wd 3e-4, per-epoch cosine to 0.001,
  clip 5; alphas: Adam 3e-4, betas (0.5, 0.999), wd 1e-3; batch 64; the
  training set split 50/50; 8 cells, C = 16, 4 nodes.
  """
  c.num_epochs = num_epochs
  c.data = ml_collections.ConfigDict(
    dict(
      name=dataset,
      data_dir='',
      split='train',
      train_portion=0.5,
      batch_size=64,
      eval_examples=10000,
    )
  )
  c.net = ml_collections.ConfigDict(
    dict(
      channels=16,
      layers=8,
      nodes=4,
      multiplier=4,
      stem_multiplier=3,
      # recompute each mixed op in the backward pass: ~8x less memory
      # for ~15% more step time (batch 16, 5 cells: 3.4 GB -> 0.4 GB)
      remat=True,
      # auto = the XLA:CPU fast path on CPU, lax/cuDNN convolutions on GPU/TPU
      conv_impl='auto',
      # float32 | bfloat16: activations and convolutions (weights, α, batch-norm
      # statistics, optimizer states and losses stay float32); a bfloat16 finite-difference
      # search wants fd_epsilon=0.1 (docs/performance.md, "On a GPU")
      precision='float32',
    )
  )
  c.weights_optim = ml_collections.ConfigDict(
    dict(lr=0.025, lr_min=0.001, momentum=0.9, weight_decay=3e-4, clip=5.0)
  )
  c.alphas_optim = ml_collections.ConfigDict(
    # warmup_epochs: architecture updates held at zero for that many epochs (PC-DARTS, P-DARTS);
    # clip: the architecture gradient's norm clipped first (P-DARTS: 5; 0 turns it off)
    dict(lr=3e-4, b1=0.5, b2=0.999, weight_decay=1e-3, warmup_epochs=0, clip=0.0)
  )
  space_blocks(c)
  return c


def space_blocks(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The search space and every variant's knobs, so `--config.space=NAME` and
  `--config.darts_plus.enabled=True` work on any NAS search config."""
  c.space = 'darts'  # darts | pdarts | pcdarts | darts_minus
  # PC-DARTS: 1/k of each edge's channels go through the mixed op (4 on CIFAR, 2 on ImageNet).
  c.pcdarts = ml_collections.ConfigDict(dict(k=4))
  # DARTS-: the auxiliary skip's coefficient, linear per epoch from aux_start (epoch 0) towards
  # aux_end (reached after the last epoch; the official code's (E - e) / E).
  c.darts_minus = ml_collections.ConfigDict(dict(aux_start=1.0, aux_end=0.0))
  # P-DARTS: stages of `layers` cells keeping `keep` ops per edge at their end, each of
  # num_epochs epochs with the dropout rate after skip-connects `drop_rates[stage]` (decaying
  # by exp(-drop_decay * epochs after the warm-up)); at most `max_skips` skip-connects in the
  # final normal cell. `stage`, `drop_rate` and `masks` are set by the runner per stage.
  c.pdarts = ml_collections.ConfigDict(
    dict(
      layers=(5, 11, 17),
      keep=(5, 3, 1),
      drop_rates=(0.1, 0.4, 0.7),
      drop_decay=0.2,
      max_skips=2,
      stage=0,
      drop_rate=0.0,
      masks='',
    )
  )
  # DARTS+: stop once the normal cell holds max_skips skip-connects or the α ranking has held
  # for stable_epochs epochs (0 turns either criterion off).
  c.darts_plus = ml_collections.ConfigDict(dict(enabled=False, max_skips=2, stable_epochs=10))
  return c


SPACE_VARIANTS = ('pdarts', 'pcdarts', 'darts_minus', 'darts_plus')


def apply_space(c: ml_collections.ConfigDict, name: str, *, keep_hypergradient: bool = False):
  """The published search recipe of a DARTS-family variant, on any NAS search config.

  With `keep_hypergradient` (the LPT, IL and MTL rows) the experiment keeps its own
  hypergradient method; the variant's space, batch, learning rates and warm-up still apply.
  """
  if name == 'darts_plus':
    c.darts_plus.enabled = True
    return c
  c.space = name
  first_order = {}
  if name == 'pcdarts':  # official train_search.py: batch 256, lr 0.1 to 0, α 6e-4 after 15
    c.data.batch_size = 256
    c.weights_optim.lr, c.weights_optim.lr_min = 0.1, 0.0
    c.alphas_optim.lr, c.alphas_optim.warmup_epochs = 6e-4, 15
    first_order = dict(hypergradient='first_order')
  elif name == 'pdarts':  # official: 25 epochs a stage, 10 without α, batch 96, lr to 0
    c.num_epochs = 25
    c.data.batch_size = 96
    c.weights_optim.lr_min = 0.0
    c.alphas_optim.lr, c.alphas_optim.warmup_epochs = 6e-4, 10
    c.alphas_optim.clip = 5.0
    first_order = dict(hypergradient='first_order')
  elif name == 'darts_minus':  # official script: first order, DARTS' recipe otherwise
    first_order = dict(hypergradient='first_order')
  if not keep_hypergradient:
    c.update(first_order)
  return c


def quick_space(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a variant's recipe with `quick_search` (run after both)."""
  c.data.batch_size = min(c.data.batch_size, 32)
  c.pcdarts.k = 2  # the quick supernet's 4 channels: 2 through the mixed op
  c.pdarts.layers = (2, 3, 3)
  c.num_epochs = 2
  c.alphas_optim.warmup_epochs = min(c.alphas_optim.warmup_epochs, 1)
  c.darts_plus.stable_epochs = min(c.darts_plus.stable_epochs, 1)
  if c.darts_plus.enabled:
    c.num_epochs = 4  # room to stop early
  return c


def parse_variant(arg: str, variants, *, config_file: str):
  """(base variant, variant-space tokens, quick) from 'BASE[,SPACE...][,quick]'."""
  tokens = [t.strip() for t in arg.split(',')] if arg else ['']
  base = [t for t in tokens if t not in SPACE_VARIANTS and t != 'quick']
  spaces = [t for t in tokens if t in SPACE_VARIANTS]
  if len(base) > 1 or (base and base[0] not in variants):
    raise ValueError(
      f'{config_file}: unknown variant {arg!r}; allowed: one of {tuple(variants)}, '
      f'optionally with any of {SPACE_VARIANTS} and quick, comma separated'
    )
  if len([t for t in spaces if t != 'darts_plus']) > 1:
    raise ValueError(f'{config_file}: {arg!r} names more than one search space')
  return (base[0] if base else ''), spaces, 'quick' in tokens


def quick_search(c: ml_collections.ConfigDict, *, dataset='digits'):
  """Shrinks a search config to run end to end on the embedded digits."""
  c.data.name = dataset
  c.data.batch_size = 32
  c.data.eval_examples = 256
  c.net.channels = 4
  c.net.layers = 3
  c.net.nodes = 2
  c.net.multiplier = 2
  c.num_epochs = 2
  c.log_every_steps = 5
  c.checkpoint_every_steps = 10
  return c


def evaluation_blocks(
  c: ml_collections.ConfigDict,
  *,
  network: str,
  dataset: str,
  layers: int,
  channels: int,
  batch_size: int,
  num_epochs: int,
) -> ml_collections.ConfigDict:
  """Genotype, data, network and optimizer blocks of an evaluation run.

  The fields every evaluation recipe sets; the recipe files fill in their
  published numbers (optimizer, drop path, label smoothing, cutout).
  `genotype` is a built-in name or a search run's genotype.json.
  """
  c.genotype = 'DARTS_V2'
  c.num_epochs = num_epochs
  c.data = ml_collections.ConfigDict(
    dict(
      name=dataset,
      data_dir='',
      batch_size=batch_size,
      eval_batch_size=250,
      train_examples=0,  # > 0: train on the first N training images
      eval_examples=0,  # > 0: report on the first N test images
      cutout_length=0,
      color_jitter=False,  # color jitter: ImageNet only
      image_size=224,
      resize_size=256,
    )
  )  # variable-size images only
  c.net = ml_collections.ConfigDict(
    dict(
      network=network,
      layers=layers,
      channels=channels,
      auxiliary_weight=0.4,  # 0 drops the auxiliary head
      drop_path_prob=0.0,
      # auto = the XLA:CPU fast path on CPU, lax/cuDNN convolutions on GPU/TPU
      conv_impl='auto',
      precision='float32',  # float32 | bfloat16, as in the search's net block
    )
  )  # ramped: prob · epoch / num_epochs
  c.optim = ml_collections.ConfigDict(
    dict(
      schedule='cosine',  # cosine (to lr_min) | exponential (× decay_rate)
      lr=0.025,
      lr_min=0.0,
      decay_rate=0.97,
      momentum=0.9,
      weight_decay=3e-4,
      clip=5.0,
    )
  )
  c.label_smoothing = 0.0
  c.eval_every_epochs = 1
  # Key implementation of init and drop path: 'rbg' compiles much faster than
  # threefry2x32 on CPU (its bits may differ across backends and versions).
  c.rng_impl = 'rbg'  # rbg | unsafe_rbg | threefry2x32
  return c


def quick_evaluation(c: ml_collections.ConfigDict, *, dataset='digits'):
  """Shrinks an evaluation config to train a tiny net on the embedded digits.

  The digits are 8x8: the auxiliary head (5x5 pooling after two
  reductions) does not fit, and cutout shrinks with the image.
  """
  c.data.name = dataset
  c.data.batch_size = 32
  c.data.eval_batch_size = 120
  c.data.cutout_length = min(c.data.cutout_length, 4)
  c.net.network = 'cifar'
  c.net.layers = 3
  c.net.channels = 8
  c.net.auxiliary_weight = 0.0
  c.num_epochs = 3
  c.log_every_steps = 10
  c.checkpoint_every_steps = 50
  return c


SEARCH_VARIANTS = ('', '2nd', '1st', 'exact', 'quick')  # each also with a SPACE_VARIANTS token


def multitask_search(skill: str, arg: str, *, config_file: str):
  """Base and DARTS blocks of a search over several tasks (IL, MTL).

  `arg` is 'BASE[,SPACE][,quick]': BASE one of '' and '2nd' (finite differences), '1st'
  (first order), 'exact' (autodiff); SPACE one of `SPACE_VARIANTS`, whose recipe applies with
  the skill's own hypergradient kept; 'quick' shrinks to the embedded digits with batch 16 and
  first order, since compiling several supernets is the cost on a CPU. The tasks live in the
  skill's own block, so `data.name` is dropped. Returns (config, the default task list:
  'cifar100,cifar10' as the IL paper orders them, or the digits pair).
  """
  base, spaces, quick = parse_variant(arg, ('', '2nd', '1st', 'exact'), config_file=config_file)
  c = program_config(skill)
  darts_search_blocks(c)
  c.hypergradient = {'1st': 'first_order', 'exact': 'exact'}.get(base, 'finite_difference')
  for name in spaces:
    apply_space(c, name, keep_hypergradient=True)
  tasks = 'cifar100,cifar10'
  if quick:
    quick_search(c)
    c.data.batch_size = 16
    c.hypergradient = 'first_order'
    tasks = 'digits_a,digits_b'
    if spaces:
      quick_space(c)
      c.data.batch_size = 16
  del c.data['name']
  return c, tasks
