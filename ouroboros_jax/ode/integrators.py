"""The rollout's integrators behind one interface (docs/method.md, "The ODE and the rollout"):
`integrate` runs the one that `RolloutConfig.backend` names, so that the training step does not
know how the rollout is computed.

- "scan": the H - 1 RK4 steps as one `lax.scan` (`dynamics.rollout`), differentiated by the
  discrete adjoint; it serves a traced horizon (`length`), so one program serves a curriculum.
- "deer": Newton iterations over the whole trajectory (`deer.deer_rollout`), O(log H) deep; it
  needs a static horizon and starts from a guess.

Both give the same trajectory to float32 rounding (tests/test_deer.py).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.ode.deer import deer_rollout, held_guess
from ouroboros_jax.ode.dynamics import RolloutConfig, rollout


class Rollout(NamedTuple):
    """An integrator's trajectory and how it got there.

    Attributes:
      x_hat: (B, H) the rollout, x_hat[:, 0] = x0.
      iterations: scalar, the mean Newton iterations (0 for the scan).
      fallbacks: scalar int32, the examples whose Newton solve fell back to the scan (0 for the scan).
    """

    x_hat: jax.Array
    iterations: jax.Array
    fallbacks: jax.Array


def horizon_is_data(config: RolloutConfig) -> bool:
    """Whether the integrator serves a traced horizon (`integrate(..., length=n)`)."""
    return config.backend == "scan"


def integrate(drives: Drives, x0: jax.Array, v0: jax.Array, horizon: int, config: RolloutConfig,
              length=None, guess: jax.Array | None = None) -> Rollout:
    """The autonomous rollout from (x0, v0) by the configured integrator.

    Args:
      drives: `Drives` of length L >= horizon.
      x0, v0: (B,) initial state.
      horizon: H, the number of output samples; static.
      config: integration settings, `config.backend` the integrator.
      length: None, or a traced horizon n <= H (only where `horizon_is_data`): samples from n on
        hold the state at n - 1 and carry no gradient.
      guess: (B, H, 2) trajectory an iterative integrator starts from (None: the initial state
        held); the scan does not use it.

    Returns:
      The `Rollout`.
    """
    if config.backend == "scan":
        x_hat = rollout(drives, x0, v0, horizon, config, length)
        return Rollout(x_hat, jnp.zeros((), x_hat.dtype), jnp.zeros((), jnp.int32))
    if length is not None:
        raise ValueError(f"the {config.backend} rollout needs a static horizon: one program per horizon")
    x_hat, stats = deer_rollout(drives, x0, v0, horizon, config, held_guess(x0, v0, horizon) if guess is None
                                else guess)
    return Rollout(x_hat, jnp.mean(stats.iterations.astype(x_hat.dtype)), jnp.sum(stats.fell_back.astype(jnp.int32)))
