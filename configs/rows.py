"""Paper rows: seeds x search -> evaluation -> the table, one row per config.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import published

DATASETS = {'c10': published.C10, 'c100': published.C100, 'imagenet': published.IN}
EVALUATION = {
  published.C10: 'configs/eval_cifar.py',
  published.C100: 'configs/eval_cifar.py:cifar100',
  published.IN: 'configs/eval_imagenet.py',
}
# method -> (search config and variant, protocol). 'darts' protocol: DARTS' own, 4 searches,
# the best by validation evaluated 10 times; 'ten': 10 repeats of search + evaluation, as the
# Skillearn and IL papers report their rows (LPT with seeds 1 to 10, as its paper says).
METHODS = {
  'darts_1st': ('configs/darts.py:1st', 'darts'),
  'darts_2nd': ('configs/darts.py:2nd', 'darts'),
  'pdarts': ('configs/darts.py:pdarts', 'ten'),
  'pcdarts': ('configs/darts.py:pcdarts', 'ten'),
  'darts_minus': ('configs/darts.py:darts_minus', 'ten'),
  'darts_plus': ('configs/darts.py:2nd,darts_plus', 'ten'),
  'lpt_r18_darts_1st': ('configs/lpt_darts.py:1st', 'lpt'),
  'lpt_r18_darts_2nd': ('configs/lpt_darts.py:r18', 'lpt'),
  'lpt_r50_darts_2nd': ('configs/lpt_darts.py:r50', 'lpt'),
  'lpt_r18_darts_minus': ('configs/lpt_darts.py:r18,darts_minus', 'lpt'),
  'lpt_r18_darts_plus': ('configs/lpt_darts.py:r18,darts_plus', 'lpt'),
  'lpt_r18_pdarts': ('configs/lpt_darts.py:r18,pdarts', 'lpt'),
  'il_darts_2nd': ('configs/il_darts.py:2nd', 'ten'),
  'il_pdarts': ('configs/il_darts.py:pdarts', 'ten'),
  'il_pcdarts': ('configs/il_darts.py:pcdarts', 'ten'),
  'mtl_darts_2nd': ('configs/mtl_darts.py:2nd', 'ten'),
  'mtl_pdarts': ('configs/mtl_darts.py:pdarts', 'ten'),
  'mtl_pcdarts': ('configs/mtl_darts.py:pcdarts', 'ten'),
}
SHORT = {v: k for k, v in DATASETS.items()}
ROWS = tuple(f'{method}_{SHORT[dataset]}' for method, dataset in published.FIGURES)


def _protocol(c: ml_collections.ConfigDict, protocol: str) -> None:
  if protocol == 'darts':
    c.seeds, c.eval_seeds, c.selection = (0, 1, 2, 3), tuple(range(10)), 'best_by_search_val'
  elif protocol == 'lpt':
    c.seeds, c.eval_seeds, c.selection = tuple(range(1, 11)), (), 'each'
  else:
    c.seeds, c.eval_seeds, c.selection = tuple(range(10)), (), 'each'


def get_config(arg: str = 'darts_2nd_c10') -> ml_collections.ConfigDict:
  """A paper row: its searches, the evaluation of their genotypes, and the published figures.

  `arg` is 'ROW[,quick]'. ROW is METHOD_DATASET with DATASET c10, c100 or imagenet (the
  evaluation's table) and METHOD one of `METHODS`; `ROWS` lists them all (every row with a
  published figure in configs/published.py). 'quick' is its twin on the embedded digits:
  2 seeds, the search config's quick variant and configs/eval_cifar.py:quick, shortened, in
  minutes on a CPU (docs/rows.md has the measured times).

    python -m skillearn_jax.row --row=configs/rows.py:darts_2nd_c10 --root=runs/row_darts2
    python -m skillearn_jax.row --row=configs/rows.py:darts_2nd_c10,quick --root=runs/q_darts2
    python -m skillearn_jax.row --row=configs/rows.py:il_darts_2nd_c100 --root=runs/row_il \\
        --executor=slurm --row.slurm.partition=gpu
    python -m skillearn_jax.table runs/row_darts2 runs/row_il

  Darts-1st/2nd rows follow DARTS' protocol (4 searches, the best by search validation
  accuracy evaluated with 10 seeds; DARTS picked it by a short training from scratch); the
  other rows repeat search + evaluation 10 times, as the Skillearn and IL papers report them.
  Searches on CIFAR-100 set the search's data.name; IL and MTL search both tasks; ImageNet
  rows train the best CIFAR-10 searched cell (IL/MTL: CIFAR-10/100) once on ImageNet, as the
  papers report them (one figure, no std).
  """
  tokens = [t.strip() for t in arg.split(',') if t.strip()]
  quick = 'quick' in tokens
  names = [t for t in tokens if t != 'quick']
  if len(names) != 1 or names[0] not in ROWS:
    raise ValueError(
      f'configs/rows.py: unknown row {arg!r}; allowed: ROW or ROW,quick with ROW one of {ROWS}'
    )
  name = names[0]
  method, short = name.rsplit('_', 1)
  dataset = DATASETS[short]
  search_config, protocol = METHODS[method]

  c = ml_collections.ConfigDict()
  c.name = name + (',quick' if quick else '')
  c.method = method
  c.dataset = dataset  # the evaluation's dataset: the paper table the row belongs to
  c.quick = quick
  c.search = ml_collections.ConfigDict()
  c.search.config = search_config  # FILE.py[:VARIANT] of the search experiment
  c.search.overrides = ml_collections.ConfigDict()  # fields set on every search's config
  if dataset == published.C100 and not method.startswith(('il_', 'mtl_')):
    c.search.overrides.data = ml_collections.ConfigDict(dict(name=published.C100))
  c.evaluation = ml_collections.ConfigDict()
  c.evaluation.config = EVALUATION[dataset]
  c.evaluation.overrides = ml_collections.ConfigDict()
  _protocol(c, protocol)
  if dataset == published.IN:  # the papers transfer one searched cell and train it once
    c.selection, c.eval_seeds = 'best_by_search_val', (0,)
  # The search's final metric (its summary's final_metrics) that picks the best genotype;
  # '' = the mean of its eval/*accuracy metrics (every task's for IL and MTL).
  c.selection_metric = ''
  c.published = tuple(p.as_dict() for p in published.FIGURES[(method, dataset)])
  # What each job asks for, on SLURM and (timeout, GPUs) with the local executor.
  c.resources = ml_collections.ConfigDict(
    dict(
      gpus_per_node=1,
      cpus_per_task=8,
      mem_gb=0,  # 0 = the partition's default
      time_min=24 * 60,  # per job; a job cut by it is requeued and resumes its checkpoint
      max_requeues=20,
    )
  )
  c.slurm = ml_collections.ConfigDict(
    dict(
      partition='',  # '' = the cluster's default
      account='',
      qos='',
      constraint='',  # e.g. 'v100'
      array_parallelism=16,  # jobs of an array running at once (--jobs overrides)
      setup=(),  # shell lines before each job, e.g. ('module load cuda/12.4',)
    )
  )
  if quick:
    variant = search_config.partition(':')[2]
    c.search.config = search_config.partition(':')[0] + ':' + variant + ',quick'
    c.evaluation.config = 'configs/eval_cifar.py:quick'
    c.search.overrides = ml_collections.ConfigDict()  # the quick search's own digits
    c.seeds = (0, 1)
    c.eval_seeds = (0, 1) if c.selection == 'best_by_search_val' else ()
    c.resources.time_min = 60
  return c
