"""The persistent compilation cache: a program compiled once is read back by a fresh process."""

import json
import subprocess
import sys

PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from ouroboros_jax.training.compilation import compile_ahead, use_compilation_cache
use_compilation_cache(sys.argv[1])
def f(x):
    return jax.lax.scan(lambda c, _: (jnp.tanh(1.1 * c) + 0.1, None), x, None, length=50)[0]
compiled = compile_ahead(jax.jit(f), jnp.ones(8))
print(json.dumps({"cached": compiled.cached, "value": compiled.executable(jnp.linspace(0, 1, 8)).tolist()}))
"""


def compile_in_fresh_process(cache_dir) -> dict:
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(cache_dir)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_the_program_back_and_computes_the_same(tmp_path):
    first, second = compile_in_fresh_process(tmp_path), compile_in_fresh_process(tmp_path)
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["value"] == second["value"]


def test_an_empty_directory_name_turns_the_cache_off(tmp_path):
    from ouroboros_jax.training.compilation import default_cache_dir

    assert compile_in_fresh_process("")["cached"] is False
    assert compile_in_fresh_process("")["cached"] is False
    assert default_cache_dir().endswith("ouroboros_jax/xla")
