"""The plainest strong PyTorch loop of the seed config, for experiments.benchmark.

    /path/to/torch-venv/bin/python experiments/torch_baseline.py [--epochs=20]

The same model and training as `python -m mlp_jax.main`: MLP 784-128-128-10 with
ReLU, softmax cross-entropy, Adam (learning rate 1e-3), batches of 128, the data
reshuffled every epoch and the last partial batch dropped, the test set
evaluated after every epoch. The data is MNIST from the project's bundled IDX
files (or --data_dir), read with numpy and preloaded as float32 tensors in
[0, 1]; one process, PyTorch's default threads. It imports only the standard
library, numpy and torch (the project does not depend on torch: run it with
the python of an environment that has it).

It prints one line per epoch and, last, one JSON line (`result: {...}`) with
the wall time from process start (as `time python ...` sees it, less the
interpreter's own start), the time to the data being ready, the training and
evaluation seconds, and the final test accuracy.
"""

import time

_STARTED = time.perf_counter()

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import gzip
import json
import os

import numpy as np
import torch
from torch import nn

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'mlp_jax', 'mnist_idx')


def read_idx(path: str) -> np.ndarray:
  """A uint8 IDX file (gzipped or not) as an array of its shape."""
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == b'\x1f\x8b':
    raw = gzip.decompress(raw)
  if raw[2] != 0x08:
    raise ValueError(f'{path}: not a uint8 IDX file')
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: str, name: str) -> np.ndarray:
  for candidate in (name + '.gz', name):
    path = os.path.join(data_dir, candidate)
    if os.path.exists(path):
      return read_idx(path)
  raise FileNotFoundError(os.path.join(data_dir, name + '.gz'))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--epochs', type=int, default=20)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--learning_rate', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--data_dir', default=BUNDLED_DIR)
  parser.add_argument('--threads', type=int, default=None,
                      help='torch.set_num_threads (default: PyTorch\'s own choice)')
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)

  def images(name):
    return torch.from_numpy(load(args.data_dir, name).reshape(-1, 784).astype(np.float32) / 255)

  def labels(name):
    return torch.from_numpy(load(args.data_dir, name).astype(np.int64))

  train_x, train_y = images('train-images-idx3-ubyte'), labels('train-labels-idx1-ubyte')
  test_x, test_y = images('t10k-images-idx3-ubyte'), labels('t10k-labels-idx1-ubyte')
  data_ready = time.perf_counter() - _STARTED

  model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                        nn.Linear(128, 10))
  optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
  loss_fn = nn.CrossEntropyLoss()
  steps = train_x.shape[0] // args.batch_size
  train_seconds = eval_seconds = 0.0
  accuracy = float('nan')
  for epoch in range(1, args.epochs + 1):
    tick = time.perf_counter()
    model.train()
    order = torch.randperm(train_x.shape[0])
    total_loss = torch.zeros(())
    for step in range(steps):
      index = order[step * args.batch_size:(step + 1) * args.batch_size]
      loss = loss_fn(model(train_x[index]), train_y[index])
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      total_loss += loss.detach()
    epoch_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    model.eval()
    with torch.inference_mode():
      accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    eval_seconds += time.perf_counter() - tick
    train_seconds += epoch_seconds
    print(f'epoch {epoch}/{args.epochs}  train loss {total_loss.item() / steps:.4f}  '
          f'test acc {accuracy:.4f}  {epoch_seconds:.2f}s', flush=True)
  result = {'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'epochs': args.epochs, 'data_ready_seconds': data_ready,
            'train_seconds': train_seconds, 'eval_seconds': eval_seconds,
            'test_accuracy': accuracy, 'total_seconds': time.perf_counter() - _STARTED}
  print('result: ' + json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
