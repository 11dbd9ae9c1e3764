"""The runtime boundary: devices and the seed mesh, host fetches, the single writer, the matmul precision.

A run is one program over every device of every process (`jax.distributed.initialize`). The
stacked seeds ("members") are sharded along a `seed` mesh axis over all devices; their number is
padded up to a multiple of the device count (times `--seed_chunk`) with inactive copies, so the
seed axis is always sharded and never silently replicated. Padding members sit at the end of the
stack; the run's bookkeeping only ever sees the first `n` (real) members (`fetch` and `unpadded`).

Every process runs the same code on the same data; only process 0 writes run.json, TensorBoard,
figures, the outputs and libraries.log (`Runtime.write`, `Runtime.writes`); Orbax writes the
checkpoints through its own multi-host support (every process takes part in a save).
"""

import contextlib
import dataclasses
import functools
import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ouroboros_jax.errors import InputError

# `highest`: full float32 products in the encoders and in every RK4 stage's kernel contraction;
# `default` lets a GPU use TF32, which the chaotic rollout amplifies (docs/method.md, "Parity with the reference").
MATMUL_PRECISIONS = ("highest", "default")


def matmul_precision(name: str):
    """A context in which every matmul and contraction JAX compiles uses precision `name`
    (`MATMUL_PRECISIONS`; the one place the run sets it)."""
    return jax.default_matmul_precision(name)


def join_processes(coordinator_address: str, num_processes: int | None, process_id: int | None) -> None:
    """Joins this process to a run over several (`jax.distributed.initialize`); "auto": the coordinator,
    the process count and this process's index from the cluster's environment (SLURM, ...)."""
    if coordinator_address == "auto":
        jax.distributed.initialize()
    elif num_processes is None or process_id is None:
        raise InputError(f"--coordinator_address={coordinator_address}: needs --num_processes and --process_id "
                         "(or --coordinator_address=auto under SLURM)")
    else:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)


def pad_members(tree, n_stacked: int):
    """Host pytree whose leaves lead with n real members -> n_stacked, repeating the first member.

    The copies are only placeholders for the devices; `SeedProgress` marks them inactive
    (`inactive_padding`), so they never train and are never scored.
    """
    def pad(a):
        n = a.shape[0]
        return np.concatenate([a, np.repeat(a[:1], n_stacked - n, axis=0)]) if n_stacked > n else a

    return jax.tree_util.tree_map(lambda a: _as_keys(a, lambda d: pad(np.asarray(d))), tree)


def pad_ids(ids, n_stacked: int) -> list:
    """Member ids of a padded stack: `ids`, then copies of the first (as `pad_members` pads)."""
    return list(ids) + [ids[0]] * (n_stacked - len(ids))


def inactive_padding(active: np.ndarray, n_real: int) -> np.ndarray:
    """active: (n_stacked,) with every padding member (index >= n_real) set False."""
    return np.asarray(active) & (np.arange(len(active)) < n_real)


def unpadded(tree, n_real: int):
    """The first `n_real` members of every leaf (host arrays)."""
    return jax.tree_util.tree_map(lambda a: a[:n_real], tree)


def _fetch_array(a) -> np.ndarray:
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def _as_keys(a, transform):
    """`transform` of a leaf; a PRNG key array is transformed as its raw key data and re-wrapped."""
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(transform(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    return transform(a)


def writes() -> bool:
    """Whether this process writes the run's files and console lines: process 0 only."""
    return jax.process_index() == 0


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where a run's programs run and who writes its files.

    Attributes:
      seed_chunk: seeds per vmapped chunk of the epoch program (0: all in one); the members are
        padded to a multiple of it, and it must be a multiple of the device count.
    """

    seed_chunk: int = 0

    def __post_init__(self):
        if self.seed_chunk and self.seed_chunk % self.n_devices:
            raise InputError(f"--seed_chunk={self.seed_chunk}: must be a multiple of the {self.n_devices} devices "
                             "the seeds are sharded over (each chunk is sharded like the whole stack)")

    @functools.cached_property
    def mesh(self) -> Mesh:
        return Mesh(np.array(jax.devices()), ("seed",))

    @property
    def n_devices(self) -> int:
        return jax.device_count()

    @property
    def writes(self) -> bool:
        return writes()

    def write(self, write_file, *args, **kwargs):
        """Calls `write_file(*args, **kwargs)` on process 0 only (the others return None)."""
        return write_file(*args, **kwargs) if self.writes else None

    def writer_only(self, make_context, *args):
        """The context manager `make_context(*args)` on process 0; elsewhere a no-op context (and
        `make_context` is not called)."""
        return make_context(*args) if self.writes else contextlib.nullcontext()

    def n_stacked(self, n_seeds: int) -> int:
        """The stack length of `n_seeds` seeds: the next multiple of the devices (or of --seed_chunk)."""
        unit = self.seed_chunk or self.n_devices
        return math.ceil(n_seeds / unit) * unit

    def chunks(self, n_stacked: int) -> int:
        """How many chunks the epoch program runs one after another for `n_stacked` members."""
        return n_stacked // self.seed_chunk if self.seed_chunk else 1

    def shard(self, tree):
        """A host pytree of a whole stack (`n_stacked` long) on the devices, sharded along `seed`."""
        sharding = NamedSharding(self.mesh, PartitionSpec("seed"))
        return jax.tree_util.tree_map(lambda a: _as_keys(a, lambda d: jax.device_put(d, sharding)), tree)

    def replicate(self, tree):
        """A copy of `tree` on every device (the training set, the held-out vocalisations)."""
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    @staticmethod
    def fetch(tree):
        """Every leaf as a host NumPy array, also arrays spanning other processes' devices (PRNG keys
        as key arrays on this process's default device: NumPy has no key type)."""
        return jax.tree_util.tree_map(lambda a: _as_keys(a, _fetch_array), tree)

    def replicated_like(self, like):
        """`like` (ShapeDtypeStructs) replicated on every device, for Orbax to restore into whatever the
        device count was when it saved."""
        sharding = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), like)

    def describe(self) -> dict:
        """For the manifest: the devices the run used."""
        devices = jax.devices()
        return {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices),
                "processes": jax.process_count()}

    def members_line(self, n_seeds: int) -> str:
        """The console's line on how the seeds sit on the devices."""
        n_stacked, processes = self.n_stacked(n_seeds), jax.process_count()
        where = f"{self.n_devices} device{'s' if self.n_devices > 1 else ''}" + (
            f" of {processes} processes" if processes > 1 else "")
        padding = (f", padded with {n_stacked - n_seeds} inactive members to {n_stacked}"
                   if n_stacked > n_seeds else "")
        chunks = f", {self.chunks(n_stacked)} chunks of {self.seed_chunk} one after another" if self.seed_chunk else ""
        return f"{n_seeds} seeds sharded over {where}{padding}{chunks}"
