"""Command line: parameter count of a genotype's evaluation network, as the papers report it.

This module owns the `count_params` CLI; `nas.eval_network.count_eval_params` builds the CIFAR or
ImageNet evaluation network of a genotype (built-in name or JSON file) with the published sizes
unless overridden, gets its parameter shapes with jax.eval_shape (nothing is compiled, so it
takes seconds), and prints one JSON line whose `params_m` is the count in millions without the
auxiliary head, as the official DARTS `utils.count_parameters_in_MB` reports it.

  python -m skillearn_jax.count_params --genotype=DARTS_V2 --network=cifar
"""

from __future__ import annotations

import json
from absl import app, flags

from skillearn_jax.nas import eval_network
from skillearn_jax.nas.genotypes import BUILTIN_GENOTYPES

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "genotype", None, f"built-in genotype ({', '.join(BUILTIN_GENOTYPES)}) or a genotype JSON file"
)
flags.DEFINE_enum("network", "cifar", list(eval_network.NETWORKS), "evaluation network")
flags.DEFINE_integer("num_classes", None, "classes (default: 10 for cifar, 1000 for imagenet)")
flags.DEFINE_integer("layers", None, "cells (default: 20 for cifar, 14 for imagenet)")
flags.DEFINE_integer("channels", None, "initial channels C (default: 36 cifar, 48 imagenet)")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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


if __name__ == "__main__":
  app.run(main)
