"""`python -m ouroboros_jax.convert`: a model trained with the PyTorch reference, as a run of ours.

    python -m ouroboros_jax.convert --torch_checkpoint=poly_spectral/seed0/checkpoint_50.tar --out_dir=runs/ref50

writes a run directory holding the reference model as seed 0 (run.json and one Orbax checkpoint
named by the file's N), which `synthesize` and `plot` read like a trained run
(ouroboros_jax/training/conversion.py; docs/cli.md). Needs torch (`pip install -e ".[bench]"`).
"""

from absl import app, flags, logging

from ouroboros_jax.errors import InputError, parse_flags, report_input_errors
from ouroboros_jax.training.conversion import NO_DATA_DIR, convert_reference_checkpoint

_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "The reference's checkpoint_<N>.tar.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Run directory to write (must not hold a run).")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", None,
                                    "Sample rate (Hz) of the data the model was trained on; default 1 / tau.")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "That data (<stem>.wav + <stem>.txt pairs), recorded for plot; optional.")
_CLAMP_STAGES = flags.DEFINE_bool("clamp_stages", False,
                                  "Bound the kernel's input inside every RK4 stage (off: the reference's integrator).")


@report_input_errors
def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
    for holder, what in ((_CHECKPOINT, "the reference's checkpoint_<N>.tar"), (_OUT_DIR, "the run directory to write")):
        if holder.value is None:
            raise InputError(f"--{holder.name} is required: {what}")
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    config = convert_reference_checkpoint(_CHECKPOINT.value, _OUT_DIR.value, _SAMPLE_RATE.value, _DATA_DIR.value,
                                          _CLAMP_STAGES.value)
    m = config.model
    data = "no --data_dir recorded" if config.data.data_dir == NO_DATA_DIR else f"data {config.data.data_dir}"
    print(f"wrote run {config.out_dir}: seed 0 = {_CHECKPOINT.value} (n_kernels {m.n_kernels}, n_layers {m.n_layers}, "
          f"d_state {m.d_state}, d_conv {m.d_conv}, expand_factor {m.expand_factor}, drive_lowpass_ms "
          f"{m.drive_lowpass_ms:g}, keep_const {m.keep_const}) at {m.sample_rate:g} Hz; {data}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
