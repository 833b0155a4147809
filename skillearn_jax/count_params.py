"""Command line: parameter count of a genotype's evaluation network or of a search supernet.

This module owns the `count_params` CLI. With `--network=search` it prints the supernet's
weight count (no architecture parameters) of a search space (`--space`, and for P-DARTS the
ops every edge keeps, `--primitives`), as the official `model_search.py` of that variant counts
it; otherwise `nas.eval_network.count_eval_params` builds the CIFAR or
ImageNet evaluation network of a genotype (built-in name or JSON file) with the published sizes
unless overridden, gets its parameter shapes with jax.eval_shape (nothing is compiled, so it
takes seconds), and prints one JSON line whose `params_m` is the count in millions without the
auxiliary head, as the official DARTS `utils.count_parameters_in_MB` reports it.

  python -m skillearn_jax.count_params --genotype=DARTS_V2 --network=cifar
  python -m skillearn_jax.count_params --network=search --space=pcdarts --layers=8 --channels=16
  python -m skillearn_jax.count_params --network=search --space=pdarts --layers=11 \
      --primitives=none,max_pool_3x3,skip_connect,sep_conv_3x3,dil_conv_3x3
"""

from __future__ import annotations

import json

from absl import app, flags, logging
import numpy as np

from skillearn_jax.nas import eval_network
from skillearn_jax.nas import ops
from skillearn_jax.nas import space as space_lib
from skillearn_jax.nas.genotypes import BUILTIN_GENOTYPES

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "genotype", None, f"built-in genotype ({', '.join(BUILTIN_GENOTYPES)}) or a genotype JSON file"
)
flags.DEFINE_enum(
  "network", "cifar", [*eval_network.NETWORKS, "search"], "evaluation network, or the supernet"
)
flags.DEFINE_enum("space", "darts", list(space_lib.SPACES), "search space (--network=search)")
flags.DEFINE_integer("k", 4, "PC-DARTS partial channels K (--space=pcdarts)")
flags.DEFINE_list(
  "primitives", None, "the ops every edge keeps (--network=search; default: all eight)"
)
flags.DEFINE_integer("num_classes", None, "classes (default: 10 for cifar, 1000 for imagenet)")
flags.DEFINE_integer("layers", None, "cells (default: 20 for cifar, 14 for imagenet)")
flags.DEFINE_integer("channels", None, "initial channels C (default: 36 cifar, 48 imagenet)")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # JAX logs its backend search at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.network == "search":
    print(json.dumps(_search_counts()))
    return
  if not FLAGS.genotype:
    raise app.UsageError(
      "--genotype is required: a built-in name "
      f"({', '.join(BUILTIN_GENOTYPES)}) or a genotype JSON file"
    )
  try:
    counts = eval_network.count_eval_params(
      FLAGS.genotype,
      FLAGS.network,
      num_classes=FLAGS.num_classes,
      layers=FLAGS.layers,
      channels=FLAGS.channels,
    )
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  print(json.dumps({"genotype": FLAGS.genotype, **counts}))


def _search_counts() -> dict:
  build = {
    "darts": space_lib.darts,
    "pdarts": space_lib.pdarts,
    "pcdarts": lambda: space_lib.pcdarts(k=FLAGS.k),
    "darts_minus": space_lib.darts_minus,
  }[FLAGS.space]
  try:
    space = build()
    if FLAGS.primitives:
      unknown = sorted(set(FLAGS.primitives) - set(ops.PRIMITIVES))
      if unknown:
        raise ValueError(f"--primitives: unknown ops {unknown}; allowed: {ops.PRIMITIVES}")
      on = np.array([p in FLAGS.primitives for p in space.primitives])
      space = space.with_masks({c: np.tile(on, (space.num_edges, 1)) for c in space.cell_types})
    layers, channels = FLAGS.layers or 8, FLAGS.channels or 16
    params = space_lib.count_search_params(
      space, channels=channels, layers=layers, num_classes=FLAGS.num_classes or 10
    )
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  return {
    "network": "search",
    "space": FLAGS.space,
    "layers": layers,
    "channels": channels,
    "params": params,
    "params_m": params / 1e6,
  }


if __name__ == "__main__":
  app.run(main)
