"""Learning to Teach (Fan et al., ICLR 2018): a teacher that picks each student's data.

The commands are in `get_config`'s docstring (big_vision style).
"""

import ml_collections

from configs import common

VARIANTS = ('', 'quick', 'mnist', 'mnist_t10k', 'cifar10', 'cifar10_resnet110', 'transfer_arch')
VARIANTS += ('transfer_data',)


def student(arch='mlp', hidden=(500,), depth=32, optimizer='sgd', lr=0.1, momentum=0.9):
  """A student block: architecture (mlp | cnn | resnet of depth 6n + 2) and its optimizer."""
  return ml_collections.ConfigDict(
    dict(arch=arch, hidden=hidden, depth=depth, optimizer=optimizer, lr=lr, momentum=momentum)
  )


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """Learning to Teach: teacher training by REINFORCE, then the frozen teacher against NoTeach,
  Self-Paced and RandTeach on fresh students.

  Stage 1 trains the teacher on the first half of the training split (each step a batch of
  parallel episodes), stage 2 teaches new students on the second half and reports test
  accuracy against examples and iterations (plots/teaching.png, the τ table in summary.json):

    python -m skillearn_jax.main --config=configs/l2t.py:quick --workdir=runs/l2t_quick
    python -m skillearn_jax.main --config=configs/l2t.py:mnist_t10k --workdir=runs/l2t_mnist \\
      --config.data.name=array_dir:../shared/data/mnist_t10k
    python -m skillearn_jax.main --config=configs/l2t.py:mnist --workdir=runs/l2t_mnist_tfds
    python -m skillearn_jax.main --config=configs/l2t.py:cifar10 --workdir=runs/l2t_cifar10

  Variants: '' / mnist (tfds mnist, MLP 784-500-10, τ 0.93, M 20), mnist_t10k (an IDX
  directory holding only MNIST's 10k test set, carved into dev, test and the two halves),
  cifar10 (ResNet-32, τ 0.80, M 128), cifar10_resnet110, transfer_arch (a teacher trained
  with ResNet-32 students teaching ResNet-110), transfer_data (trained on MNIST's MLP, teaching
  CIFAR-10 ResNet-32 students), quick (embedded digits, a small MLP; minutes on a CPU).
  One stage alone: --config.l2t.stage=teacher, or =student with --config.l2t.teacher_path.
  """
  if arg not in VARIANTS:
    raise ValueError(f'configs/l2t.py: unknown variant {arg!r}; allowed: {VARIANTS}')
  c = common.base_config('l2t')
  c.rng_impl = 'rbg'  # compiles much faster than threefry2x32 on CPU
  c.log_every_steps = 1
  c.checkpoint_every_steps = 5
  c.data = ml_collections.ConfigDict(
    dict(
      name='mnist',  # digits | mnist | cifar10 | array_dir:PATH
      teach_name='',  # stage 2's dataset ('' = name): transfer across datasets
      data_dir='',
      split='train',  # the split cut into dev, (test,) teacher half and student half
      test_split='test',  # '' = carve data.test_examples from data.split
      split_seed=0,
      dev_examples=1000,
      test_examples=0,  # > 0: the first N of test_split (or the carved test set's size)
      train_examples=0,  # > 0: at most N examples in each half
    )
  )
  c.student = student()  # the students of teacher training
  c.teach_student = student()  # the students taught in stage 2 (transfer: another arch)
  c.l2t = ml_collections.ConfigDict(
    dict(
      stage='',  # '' teacher then student | teacher | student
      batch_size=20,  # M: examples per student step
      pool_factor=2,  # K = M · pool_factor candidates drawn per step (1: thin the batch)
      horizon=2000,  # T′: the reward's cap; iteration feature = t / T′
      tau=0.93,  # target held-out accuracy
      teach_tau=0.0,  # stage 2's τ for the table (0: tau), e.g. for another dataset
      check_every=10,  # student steps between held-out accuracy checks
      parallel_episodes=8,  # episodes (fresh students) vmapped per teacher step
      teacher_steps=30,  # REINFORCE steps of the teacher
      teacher_hidden=12,
      keep_bias=2.0,  # output bias at init: keep probability sigmoid(2) = 0.88
      teacher_optimizer='adam',  # adam | sgd
      teacher_lr=1e-3,
      baseline_decay=0.8,  # b <- 0.8 b + 0.2 mean reward
      loss_scale=0.0,  # losses are divided by it for the features (0: log num_classes)
      student_iterations=2000,  # stage 2: steps of each taught student
      chunk=100,  # stage 2: student steps per loop step (checkpoint granularity)
      seeds=5,  # stage 2: students per method
      methods=('l2t', 'noteach', 'spl', 'randteach'),
      spl_start=0.5,  # Self-Paced: fraction of the pool kept (easiest) at step 0 ...
      spl_ramp=0.5,  # ... rising linearly to 1 at spl_ramp · T′
      rand_drop_ratio=-1.0,  # RandTeach's drop ratio; -1: the trained teacher's
      teacher_path='',  # stage 2: the teacher.npz to use (set by the chain)
    )
  )
  if arg == 'mnist_t10k':
    c.data.name = 'array_dir:/work/shared/data/mnist_t10k'
    c.data.split, c.data.test_split, c.data.test_examples = 'test', '', 2000
    c.l2t.teacher_steps, c.l2t.teacher_lr = 50, 0.01  # measured: 0.2 s an episode here
  elif arg in ('cifar10', 'cifar10_resnet110', 'transfer_arch', 'transfer_data'):
    c.data.name = 'cifar10'
    c.data.dev_examples = 5000
    depth = 110 if arg == 'cifar10_resnet110' else 32
    c.student = student('resnet', depth=depth, optimizer='momentum', lr=0.1)
    c.teach_student = student(
      'resnet', depth=110 if arg == 'transfer_arch' else depth, optimizer='momentum', lr=0.1
    )
    c.l2t.update(dict(batch_size=128, tau=0.8, horizon=20000, check_every=100, chunk=500))
    c.l2t.update(dict(student_iterations=20000, parallel_episodes=4))
    if arg == 'transfer_data':  # MNIST MLP teacher, CIFAR-10 ResNet-32 students
      c.data.name, c.data.teach_name = 'mnist', 'cifar10'
      c.student = student()
      c.l2t.tau, c.l2t.teach_tau = 0.93, 0.8
  elif arg == 'quick':
    c.data.name = 'digits'
    c.data.dev_examples = 200
    c.student = student(hidden=(32,), lr=0.1)
    c.teach_student = student(hidden=(32,), lr=0.1)
    c.l2t.update(dict(batch_size=16, horizon=200, tau=0.85, check_every=10, teacher_steps=40))
    c.l2t.teacher_lr = 0.01  # 40 steps only
    c.l2t.update(dict(student_iterations=200, chunk=50, seeds=3))
  return c
