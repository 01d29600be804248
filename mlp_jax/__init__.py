"""mlp_jax: train small networks on MNIST with JAX/Flax, fast and reproducibly."""

__version__ = '0.1.0'


def load_trained(workdir, output='labels'):
  """See mlp_jax.inference.load_trained (imported on first use: keeps `import mlp_jax` light)."""
  from mlp_jax.inference import load_trained as _load_trained  # pylint: disable=g-import-not-at-top
  return _load_trained(workdir, output)
