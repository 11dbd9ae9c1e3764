"""The ODE and its rollout (docs/method.md, "The ODE and the rollout"): the second-order ODE
driven by the encoders' drives, integrated from an initial state. `dynamics` holds the vector
field, RK4 and the `lax.scan`; `deer` the parallel-in-time DEER iteration; `numba_rollout` the CPU
kernel of the scan and its adjoint; `integrators.integrate` is the one entry that the training
step and evaluation call, whichever of them runs. (Not `rollout/`: `ouroboros_jax.rollout` is the
scan's function in the core API.)"""
