"""Compiling the run's programs: JAX's persistent compilation cache and what each compile cost.

With the cache on (the default: a folder under the user's cache directory), a program compiled
once is read back from disk by every later run with the same code, settings and shapes, so a
resumed or repeated run compiles nothing it has compiled before. Each compile is made ahead of
its first call (`jit(...).lower(...).compile()`), timed, and reported as fresh or cached.
"""

import dataclasses
import os
import pathlib
import time

import jax

_CACHE_HITS = "/jax/compilation_cache/cache_hits"
_hits = 0


def _count_hit(event: str, **kwargs) -> None:
    global _hits
    if event == _CACHE_HITS:
        _hits += 1


jax.monitoring.register_event_listener(_count_hit)


def default_cache_dir() -> str:
    """$XDG_CACHE_HOME/ouroboros_jax/xla, or ~/.cache/ouroboros_jax/xla."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return str(pathlib.Path(base) / "ouroboros_jax" / "xla")


def use_compilation_cache(directory: str) -> None:
    """Caches every compiled program in `directory` (created if needed); "" turns caching off.

    Every program is cached however fast it compiled, so that a repeated run compiles nothing.
    """
    if not directory:
        jax.config.update("jax_compilation_cache_dir", None)
        return
    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A compiled program and how it was obtained."""

    executable: jax.stages.Compiled
    seconds: float  # lowering + compiling (or reading back from the cache)
    cached: bool  # read back from the persistent cache

    @property
    def memory(self) -> dict:
        """Bytes per device the program needs, from XLA's memory analysis: its `arguments`,
        `outputs` and `temporaries` (intermediates, the largest set live at once), and `peak`, their
        sum less the outputs that reuse argument buffers. Empty where the backend has no analysis."""
        analysis = self.executable.memory_analysis()
        if analysis is None:
            return {}
        sizes = {"arguments": analysis.argument_size_in_bytes, "outputs": analysis.output_size_in_bytes,
                 "temporaries": analysis.temp_size_in_bytes}
        return {**sizes, "peak": sum(sizes.values()) - analysis.alias_size_in_bytes}


def compile_ahead(jitted, *args) -> Compiled:
    """Lowers and compiles `jitted` for `args` now (they are only read for shapes and shardings)."""
    hits = _hits
    t0 = time.perf_counter()
    executable = jitted.lower(*args).compile()
    return Compiled(executable, time.perf_counter() - t0, _hits > hits)
