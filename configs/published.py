"""The published figures the paper rows are compared with, each with the table it comes from.

Read from the text copies in /work/shared/papers: Skillearn (Xie, Du, Ban) Tables 7 (CIFAR-100),
8 (CIFAR-10), 9 (ImageNet), 17 (CIFAR-100, IL), 18 (CIFAR-10, IL), 19 (MTL vs IL); the
Interleaving Learning paper (Ban, Xie) Tables 2 (CIFAR-100), 3 (CIFAR-10), 4 (ImageNet). The
baselines' figures (DARTS, P-DARTS, PC-DARTS, DARTS-, DARTS+) are those these tables cite.
Error in %, std None where the table gives none; params in millions; cost in GPU-days on the
table's GPU (Tesla V100 in both papers). ImageNet rows give top-1 as `error` and top-5 as
`top5_error`. Where the two papers differ (IL-DARTS-2nd, the DARTS-2nd ImageNet cost) both
are kept, the row's own paper first.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

SKILLEARN = 'Skillearn'
IL_PAPER = 'IL paper'


@dataclasses.dataclass(frozen=True)
class Published:
  method: str  # as the table names it
  dataset: str  # the evaluation dataset: cifar10 | cifar100 | imagenet2012
  error: float  # test error % (ImageNet: top-1)
  std: Optional[float]
  params_m: Optional[float]
  cost_gpu_days: Optional[float]
  source: str  # paper and table
  top5_error: Optional[float] = None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def _p(method, dataset, error, std, params, cost, source, top5=None):
  return Published(method, dataset, error, std, params, cost, source, top5)


C10, C100, IN = 'cifar10', 'cifar100', 'imagenet2012'

# (row method, dataset) -> the figures, the row's own paper first.
FIGURES: dict[tuple[str, str], tuple[Published, ...]] = {
  # DARTS-family baselines, as the Skillearn and IL tables cite them.
  ('darts_1st', C10): (_p('DARTS-1st', C10, 3.00, 0.14, 3.3, 0.4, f'{SKILLEARN} Table 8'),),
  ('darts_1st', C100): (_p('DARTS-1st', C100, 20.52, 0.31, 1.8, 0.4, f'{SKILLEARN} Table 7'),),
  ('darts_2nd', C10): (_p('DARTS-2nd', C10, 2.76, 0.09, 3.3, 1.5, f'{SKILLEARN} Table 8'),),
  ('darts_2nd', C100): (_p('DARTS-2nd', C100, 20.58, 0.44, 1.8, 1.5, f'{SKILLEARN} Table 7'),),
  ('darts_2nd', IN): (
    _p('DARTS-2nd-CIFAR-10', IN, 26.7, None, 4.7, 4.0, f'{SKILLEARN} Table 9', 8.7),
    _p('DARTS2nd-CIFAR10', IN, 26.7, None, 4.7, 1.5, f'{IL_PAPER} Table 4', 8.7),
  ),
  ('pdarts', C10): (_p('P-DARTS', C10, 2.50, None, 3.4, 0.3, f'{SKILLEARN} Table 8'),),
  ('pdarts', C100): (_p('P-DARTS', C100, 17.49, None, 3.6, 0.3, f'{SKILLEARN} Table 7'),),
  ('pdarts', IN): (_p('PDARTS-CIFAR10', IN, 24.4, None, 4.9, 0.3, f'{IL_PAPER} Table 4', 7.4),),
  ('pcdarts', C10): (_p('PC-DARTS', C10, 2.57, 0.07, 3.6, 0.1, f'{IL_PAPER} Table 3'),),
  ('pcdarts', C100): (_p('PC-DARTS (re-run)', C100, 17.96, 0.15, 3.9, 0.1, f'{IL_PAPER} Table 2'),),
  ('darts_minus', C10): (
    _p('DARTS- (re-run)', C10, 2.97, 0.04, 3.3, 0.4, f'{SKILLEARN} Table 8'),
    _p('DARTS- (as published)', C10, 2.59, 0.08, 3.5, 0.4, f'{SKILLEARN} Table 8'),
  ),
  ('darts_minus', C100): (
    _p('DARTS- (re-run)', C100, 18.97, 0.16, 3.1, 0.4, f'{SKILLEARN} Table 7'),
    _p('DARTS- (as published)', C100, 17.51, 0.25, 3.3, 0.4, f'{SKILLEARN} Table 7'),
  ),
  ('darts_plus', C10): (_p('DARTS+ (600 ep.)', C10, 2.83, 0.05, 3.7, 0.4, f'{SKILLEARN} Table 8'),),
  ('darts_plus', C100): (
    _p('DARTS+ (600 ep.)', C100, 17.11, 0.43, 3.8, 0.2, f'{SKILLEARN} Table 7'),
  ),
  # Learning by Passing Tests (Skillearn Tables 7-9).
  ('lpt_r18_darts_1st', C10): (
    _p('LPT-R18-DARTS-1st', C10, 2.85, 0.09, 2.7, 0.6, f'{SKILLEARN} Table 8'),
  ),
  ('lpt_r18_darts_1st', C100): (
    _p('LPT-R18-DARTS-1st', C100, 19.11, 0.11, 2.1, 0.6, f'{SKILLEARN} Table 7'),
  ),
  ('lpt_r18_darts_2nd', C10): (
    _p('LPT-R18-DARTS-2nd', C10, 2.72, 0.07, 3.4, 1.8, f'{SKILLEARN} Table 8'),
  ),
  ('lpt_r18_darts_2nd', C100): (
    _p('LPT-R18-DARTS-2nd', C100, 19.47, 0.20, 2.1, 1.8, f'{SKILLEARN} Table 7'),
  ),
  ('lpt_r18_darts_2nd', IN): (
    _p('LPT-R18-DARTS-2nd-CIFAR-10', IN, 25.3, None, 4.7, 4.0, f'{SKILLEARN} Table 9', 7.9),
  ),
  ('lpt_r50_darts_2nd', C10): (
    _p('LPT-R50-DARTS-2nd', C10, 2.68, 0.02, 3.4, 2.0, f'{SKILLEARN} Table 8'),
  ),
  ('lpt_r50_darts_2nd', C100): (
    _p('LPT-R50-DARTS-2nd', C100, 18.40, 0.16, 2.5, 2.0, f'{SKILLEARN} Table 7'),
  ),
  ('lpt_r18_darts_minus', C10): (
    _p('LPT-R18-DARTS-', C10, 2.74, 0.07, 3.4, 0.6, f'{SKILLEARN} Table 8'),
  ),
  ('lpt_r18_darts_minus', C100): (
    _p('LPT-R18-DARTS-', C100, 18.28, 0.14, 3.4, 0.6, f'{SKILLEARN} Table 7'),
  ),
  ('lpt_r18_darts_plus', C10): (
    _p('LPT-R18-DARTS+', C10, 2.69, 0.05, 3.6, 0.5, f'{SKILLEARN} Table 8'),
  ),
  ('lpt_r18_darts_plus', C100): (
    _p('LPT-R18-DARTS+', C100, 16.58, 0.19, 3.7, 0.3, f'{SKILLEARN} Table 7'),
  ),
  ('lpt_r18_pdarts', C100): (
    _p('LPT-R18-P-DARTS', C100, 16.28, 0.10, 3.8, 0.5, f'{SKILLEARN} Table 7'),
  ),
  # Interleaving learning and its multi-task baseline (IL paper Tables 2-4; Skillearn 17-19).
  ('il_darts_2nd', C10): (
    _p('IL-DARTS2nd', C10, 2.62, 0.04, 2.6, 3.2, f'{IL_PAPER} Table 3'),
    # Table 18 labels this row LPT-R18-DARTS-2nd; its text and Table 19 make it IL's.
    _p('IL-DARTS-2nd', C10, 2.74, 0.07, 3.4, 1.8, f'{SKILLEARN} Table 18'),
  ),
  ('il_darts_2nd', C100): (
    _p('IL-DARTS2nd', C100, 17.12, 0.08, 2.6, 3.2, f'{IL_PAPER} Table 2'),
    _p('IL-DARTS-2nd', C100, 17.46, 0.25, 2.1, 1.8, f'{SKILLEARN} Table 17'),
  ),
  ('il_darts_2nd', IN): (
    _p('IL-DARTS2nd-CIFAR10/100', IN, 25.5, None, 3.8, 3.2, f'{IL_PAPER} Table 4', 8.0),
  ),
  ('mtl_darts_2nd', C10): (
    _p('MTL-DARTS2nd', C10, 2.91, 0.12, 2.4, 3.1, f'{IL_PAPER} Table 3'),
    _p('Multi-task learning', C10, 2.93, None, None, None, f'{SKILLEARN} Table 19'),
  ),
  ('mtl_darts_2nd', C100): (
    _p('MTL-DARTS2nd', C100, 18.92, 0.17, 2.4, 3.1, f'{IL_PAPER} Table 2'),
    _p('Multi-task learning', C100, 18.88, None, None, None, f'{SKILLEARN} Table 19'),
  ),
  ('mtl_darts_2nd', IN): (
    _p('MTL-DARTS2nd-CIFAR10/100', IN, 26.4, None, 3.5, 3.1, f'{IL_PAPER} Table 4', 8.5),
  ),
  ('il_pdarts', C10): (_p('IL-PDARTS', C10, 2.51, 0.10, 3.6, 0.6, f'{IL_PAPER} Table 3'),),
  ('il_pdarts', C100): (_p('IL-PDARTS', C100, 16.14, 0.17, 3.6, 0.6, f'{IL_PAPER} Table 2'),),
  ('il_pdarts', IN): (
    _p('IL-PDARTS-CIFAR10/100', IN, 24.1, None, 5.3, 0.6, f'{IL_PAPER} Table 4', 7.1),
  ),
  ('mtl_pdarts', C10): (_p('MTL-PDARTS', C10, 2.63, 0.12, 3.5, 0.6, f'{IL_PAPER} Table 3'),),
  ('mtl_pdarts', C100): (_p('MTL-PDARTS', C100, 17.67, 0.31, 3.5, 0.6, f'{IL_PAPER} Table 2'),),
  ('mtl_pdarts', IN): (
    _p('MTL-PDARTS-CIFAR10/100', IN, 25.0, None, 5.1, 0.6, f'{IL_PAPER} Table 4', 7.9),
  ),
  ('il_pcdarts', C10): (_p('IL-PCDARTS', C10, 2.55, 0.11, 3.8, 0.3, f'{IL_PAPER} Table 3'),),
  ('il_pcdarts', C100): (_p('IL-PCDARTS', C100, 17.83, 0.14, 3.8, 0.3, f'{IL_PAPER} Table 2'),),
  ('mtl_pcdarts', C10): (_p('MTL-PCDARTS', C10, 2.63, 0.05, 3.9, 0.2, f'{IL_PAPER} Table 3'),),
  ('mtl_pcdarts', C100): (_p('MTL-PCDARTS', C100, 18.11, 0.27, 3.9, 0.2, f'{IL_PAPER} Table 2'),),
}
