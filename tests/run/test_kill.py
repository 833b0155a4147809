"""SIGKILL at random moments of a tiny search, saves included: the resumed run ends with the
uninterrupted run's genotype, metrics and summary.

Each kill is of a real `python -m skillearn_jax.main` process that saves a checkpoint every
step, at a random time after it starts or the moment a save is under way (orbax's temporary
directory exists). A chain of kills ends with one more run of the same command, which must
finish as if nothing had happened. The default suite kills four times; the 20-kill version
(four chains of five) is marked slow: `python -m pytest -m slow tests/run/test_kill.py`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests import conftest
from skillearn_jax.run import writers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = [
  '--config=configs/darts.py:1st,quick',
  '--config.num_epochs=1',
  '--config.checkpoint_every_steps=1',
  '--config.log_every_steps=1',
  '--config.data.eval_examples=32',
  f'--config.compilation_cache_dir={conftest.XLA_CACHE_DIR}',
]
TIMING = ('step_seconds', 'examples_per_second')


def _start(workdir: str, log) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, '-m', 'skillearn_jax.main', *ARGS, f'--workdir={workdir}'],
    cwd=ROOT,
    stdout=log,
    stderr=subprocess.STDOUT,
  )


def _saving(workdir: str) -> bool:
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any('tmp' in n for n in os.listdir(directory))


def _kill_at_random(workdir: str, rng: random.Random, log) -> str:
  """Starts the command and SIGKILLs it at a random moment; returns when, or 'finished'."""
  process = _start(workdir, log)
  during_save = rng.random() < 0.5
  deadline = time.monotonic() + (120 if during_save else rng.uniform(3.0, 14.0))
  while time.monotonic() < deadline and process.poll() is None:
    if during_save and _saving(workdir):
      break
    time.sleep(0.002)
  if process.poll() is not None:
    assert process.returncode == 0, open(log.name).read()[-3000:]
    return 'finished'
  moment = 'during a save' if _saving(workdir) else 'between saves'
  process.send_signal(signal.SIGKILL)
  process.wait()
  return moment


def _finish(workdir: str, log) -> None:
  process = _start(workdir, log)
  assert process.wait(timeout=600) == 0, open(log.name).read()[-3000:]


def _outcome(workdir: str) -> dict:
  rows = writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, 'genotype.json')) as f:
    genotype = json.load(f)
  return {
    'genotype': genotype,
    'metrics': [{k: v for k, v in r.items() if k not in TIMING} for r in rows],
    'final': {k: v for k, v in summary['final_metrics'].items() if k not in TIMING},
    'steps': summary['steps'],
    'complete': summary['complete'],
  }


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('kill') / 'uninterrupted')
  with open(workdir + '.log', 'w') as log:
    _finish(workdir, log)
  return _outcome(workdir)


def _chains(tmp_path, uninterrupted, *, kills: int, per_chain: int, seed: int) -> list:
  """Kills until `kills` processes died by SIGKILL, `per_chain` in a workdir (fewer when a
  process finished first), each workdir then finished and compared; returns the moments."""
  rng = random.Random(seed)
  moments = []
  chain = 0
  while sum(m != 'finished' for m in moments) < kills:
    workdir = str(tmp_path / f'chain_{chain}')
    with open(workdir + '.log', 'w') as log:
      for _ in range(per_chain):
        moments.append(_kill_at_random(workdir, rng, log))
        if moments[-1] == 'finished':
          break
      _finish(workdir, log)
    assert _outcome(workdir) == uninterrupted, f'chain {chain} after kills {moments}'
    chain += 1
  return moments


def test_killed_four_times_the_search_ends_as_if_never_killed(tmp_path, uninterrupted):
  moments = _chains(tmp_path, uninterrupted, kills=4, per_chain=4, seed=0)
  assert moments.count('during a save') >= 1, moments


@pytest.mark.slow  # ~6 min of process starts; the test above covers the same path
def test_twenty_kills_in_four_chains_each_end_as_if_never_killed(tmp_path, uninterrupted):
  moments = _chains(tmp_path, uninterrupted, kills=20, per_chain=5, seed=1)
  assert moments.count('during a save') >= 5, moments
