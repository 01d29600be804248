"""Traced programs, kept across processes so that a warm start skips tracing.

JAX's persistent compilation cache skips XLA's compilation, but its key is a
hash of the lowered program, so every process still traces and lowers each
program first, a good part of a warm start-up (docs/performance.md).
`trace(fn, args)` goes through `jax.export` instead: the traced and lowered
program (StableHLO) is serialized into this cache, and a later process with the
same key deserializes it and calls it inside `jax.jit` without tracing `fn` at all.

Every program goes through `jax.export`, cache or no cache, hit or miss, so the
program XLA compiles is the same in all four cases (and so are the bits).

The key (`ProgramCache.key`) is a SHA-256 of everything a trace reads: the
source of every mlp_jax module, the versions of Python and of the libraries that
trace (jax, jaxlib, flax, optax, numpy), JAX's configuration, the backend and
its devices, the caller's description of the program (its config) and the
shapes, dtypes and shardings of its arguments. What it cannot see is a library
edited in place without a new version, or a function patched at run time: the
entry points (`mlp_jax.main`, `experiments.sweep`) use the cache; the library
functions use it only when given a directory (`RunOptions.program_cache_dir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import platform
import tempfile
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
from jax import export

from mlp_jax.environment import distribution_version

# Bumped whenever what an entry holds changes.
FORMAT = 1
# The libraries whose Python code runs while a program is traced.
TRACING_LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
SUFFIX = '.program'


@dataclasses.dataclass(frozen=True)
class Program:
  """A traced program: `program(*args)` runs it (inside or outside `jax.jit`),
  with the argument structure it was traced for; `out_shapes` is its result as
  a pytree of jax.ShapeDtypeStruct."""
  exported: export.Exported
  in_tree: Any
  out_tree: Any

  def __call__(self, *args):
    leaves, in_tree = jax.tree.flatten(args)
    if in_tree != self.in_tree:
      raise ValueError(f'arguments {in_tree} differ from the traced {self.in_tree}')
    return jax.tree.unflatten(self.out_tree, self.exported.call(*leaves))

  @property
  def out_shapes(self) -> Any:
    return jax.tree.unflatten(self.out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype)
                                              for a in self.exported.out_avals])


def _export(fn: Callable[..., Any], args: Tuple[Any, ...]) -> Program:
  """Traces and lowers `fn` for `args` (pytrees of jax.ShapeDtypeStruct, with
  shardings where they matter)."""
  leaves, in_tree = jax.tree.flatten(args)
  out_trees = []

  def flat(*flat_args):
    out_leaves, out_tree = jax.tree.flatten(fn(*jax.tree.unflatten(in_tree, flat_args)))
    out_trees.append(out_tree)
    return out_leaves

  exported = export.export(jax.jit(flat))(*leaves)
  return Program(exported, in_tree, out_trees[-1])


def _describe_args(args: Tuple[Any, ...]) -> str:
  leaves, tree = jax.tree.flatten(args)
  return repr(tree) + ''.join(
      f'\n{a.shape} {a.dtype} {getattr(a, "sharding", None)}' for a in leaves)


def _source_digest() -> str:
  """SHA-256 over the source of every module of the mlp_jax package."""
  package = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for folder, subfolders, files in os.walk(package):
    subfolders.sort()
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        digest.update(os.path.relpath(path, package).encode() + b'\0')
        with open(path, 'rb') as f:
          digest.update(f.read() + b'\0')
  return digest.hexdigest()


class ProgramCache:
  """Serialized traced programs in `directory` (created on the first write).

  An entry that cannot be read (missing, truncated, another format, written for
  another key) is a miss: the program is traced and the entry written again.
  Writes go to a temporary file renamed into place, so a reader never sees half
  an entry. A write that fails (disk full, read-only) is skipped: the cache only
  ever saves time.
  """

  def __init__(self, directory: str):
    self.directory = directory
    self.hits = 0
    self.misses = 0
    self._base: Optional[str] = None

  def _base_key(self) -> str:
    if self._base is None:
      devices = jax.devices()
      self._base = '\n'.join([
          f'format {FORMAT}', f'python {platform.python_version()}',
          *(f'{name} {distribution_version(name)}' for name in TRACING_LIBRARIES),
          f'mlp_jax source {_source_digest()}',
          f'jax config {sorted((k, repr(v)) for k, v in jax.config.values.items())}',
          f'backend {jax.default_backend()} {jax.process_count()} processes',
          f'devices {[(d.id, d.process_index, d.device_kind) for d in devices]}'])
    return self._base

  def key(self, description: str, args: Tuple[Any, ...]) -> Tuple[str, str]:
    """(hex SHA-256, the text it hashes) of a program: `description` (what the
    caller traces: name and config) and its arguments."""
    text = f'{self._base_key()}\nprogram {description}\nargs {_describe_args(args)}'
    return hashlib.sha256(text.encode()).hexdigest(), text

  def _read(self, path: str, text: str) -> Optional[Program]:
    try:
      with open(path, 'rb') as f:
        entry = pickle.load(f)
      if entry['format'] != FORMAT or entry['key'] != text:
        return None
      return Program(export.deserialize(bytearray(entry['exported'])), entry['in_tree'],
                     entry['out_tree'])
    except Exception:  # pylint: disable=broad-except
      # Any unreadable entry (absent, truncated, from another version of a
      # library whose classes moved) is a miss, never an error.
      return None

  def _write(self, path: str, text: str, program: Program) -> None:
    try:
      exported = bytes(program.exported.serialize())
    except ImportError:
      # jax.export serializes with flatbuffers, which jax does not require: without
      # it every process traces (a machine that reaches no package registry).
      return
    entry = {'format': FORMAT, 'key': text, 'exported': exported,
             'in_tree': program.in_tree, 'out_tree': program.out_tree}
    try:
      os.makedirs(self.directory, exist_ok=True)
      handle, temporary = tempfile.mkstemp(dir=self.directory, suffix='.tmp')
      try:
        with os.fdopen(handle, 'wb') as f:
          pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
      except BaseException:
        os.unlink(temporary)
        raise
    except OSError:
      pass

  def get_or_trace(self, description: str, fn: Callable[..., Any],
                   args: Tuple[Any, ...]) -> Program:
    digest, text = self.key(description, args)
    path = os.path.join(self.directory, digest + SUFFIX)
    program = self._read(path, text)
    if program is not None:
      self.hits += 1
      return program
    self.misses += 1
    program = _export(fn, args)
    self._write(path, text, program)
    return program


def trace(description: str, fn: Callable[..., Any], args: Sequence[Any],
          cache: Optional[ProgramCache] = None) -> Program:
  """`fn` traced for `args` (pytrees of jax.ShapeDtypeStruct) as a Program: from
  `cache` when it holds one for the same key, else traced (and kept there).

  `description` names the program and everything about `fn` that its key cannot
  see otherwise (for the driver: which function, and the config it was built
  from)."""
  if cache is None:
    return _export(fn, tuple(args))
  return cache.get_or_trace(description, fn, tuple(args))
