"""LPT tester networks: published ResNet sizes, the CIFAR stem, the heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skillearn_jax.nas import ops
from skillearn_jax.nas import tester

# torchvision's ImageNet models (1000 classes, 7x7 stride-2 stem conv).
TORCHVISION_RESNET18 = 11_689_512
TORCHVISION_RESNET50 = 25_557_032
FC_1000 = {'resnet18': 512 * 1000 + 1000, 'resnet50': 2048 * 1000 + 1000}
# The CIFAR stem is a 3x3 instead of a 7x7 conv, 3 -> 64 channels, no bias.
STEM_SAVING = (7 * 7 - 3 * 3) * 3 * 64


def _shapes(encoder, image_shape=(32, 32, 3)):
  x = jnp.zeros((2, *image_shape))
  return jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0), x, train=False))


@pytest.mark.parametrize(
  'name,torchvision', [('resnet18', TORCHVISION_RESNET18), ('resnet50', TORCHVISION_RESNET50)]
)
def test_resnet_encoder_counts_match_the_cifar_variants(name, torchvision):
  expected = torchvision - FC_1000[name] - STEM_SAVING
  assert ops.count_params(_shapes(tester.make_encoder(name))['params']) == (expected)
  # With a 10-class executor these are the well-known CIFAR ResNet sizes.
  head = tester.make_encoder(name).feature_dim * 10 + 10
  assert expected + head == {'resnet18': 11_173_962, 'resnet50': 23_520_842}[name]


@pytest.mark.parametrize('name,dim', [('resnet18', 512), ('resnet50', 2048), ('tiny', 16)])
def test_feature_dims_and_cifar_stem(name, dim):
  encoder = tester.make_encoder(name)
  variables = _shapes(encoder)
  x = jnp.zeros((2, 32, 32, 3))
  features = jax.eval_shape(lambda v: encoder.apply(v, x, train=False), variables)
  assert features.shape == (2, dim) and encoder.feature_dim == dim
  if name != 'tiny':
    # Stride-1 stem and no max-pool: three stride-2 stages take 32 to 4
    # (an ImageNet stem would end at 1x1).
    fmap = jax.eval_shape(lambda v: encoder.apply(v, x, train=False, pool=False), variables)
    assert fmap.shape == (2, 4, 4, dim)
    stem = variables['params']['Conv_0']['kernel']
    assert stem.shape == (3, 3, 3, 64)
  assert 'batch_stats' in variables


def test_unknown_encoder_names_the_allowed_ones():
  with pytest.raises(ValueError, match="unknown name 'vgg'.*resnet50"):
    tester.make_encoder('vgg')


def test_heads_and_selection_weights():
  encoder = tester.make_encoder('tiny')
  enc, executor, creator, stats = tester.init_tester(jax.random.PRNGKey(0), encoder, 7, (8, 8, 1))
  assert executor['kernel'].shape == (16, 7)
  assert creator['kernel'].shape == (16, 2)
  features = jax.random.normal(jax.random.PRNGKey(1), (5, 16))
  f = tester.selection_weights(creator, features)
  logits = features @ creator['kernel'] + creator['bias']
  np.testing.assert_allclose(f, jax.nn.sigmoid(logits[:, 1] - logits[:, 0]), rtol=1e-5)
  images = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 1))
  feats, new_stats = tester.encode(encoder, enc, stats, images, train=True)
  assert feats.shape == (4, 16)
  assert not np.allclose(new_stats['BatchNorm_0']['mean'], stats['BatchNorm_0']['mean'])
  _, same = tester.encode(encoder, enc, stats, images, train=False)
  assert same is stats
