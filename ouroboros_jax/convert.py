"""`python -m ouroboros_jax.convert`: a model trained with the PyTorch reference, as a run of ours.

    python -m ouroboros_jax.convert --torch_checkpoint=poly_spectral/seed0/checkpoint_50.tar --out_dir=runs/ref50

writes a run directory holding the reference model as seed 0 (run.json and one Orbax checkpoint
named by the file's N), which `synthesize` and `plot` read like a trained run
(ouroboros_jax/training/conversion.py; docs/cli.md). Needs torch (`pip install -e ".[bench]"`).
"""

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.training.conversion import NO_DATA_DIR, convert_reference_checkpoint

FLAGS = cli.flag_set()
_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "The reference's checkpoint_<N>.tar.", flag_values=FLAGS)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Run directory to write (must not hold a run).", flag_values=FLAGS)
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", None,
                                    "Sample rate (Hz) of the data the model was trained on; default 1 / tau.",
                                    flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "That data (<stem>.wav + <stem>.txt pairs), recorded for plot; optional.",
                                flag_values=FLAGS)
_CLAMP_STAGES = flags.DEFINE_bool("clamp_stages", False,
                                  "Bound the kernel's input inside every RK4 stage (off: the reference's integrator).",
                                  flag_values=FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"torch_checkpoint": "the reference's checkpoint_<N>.tar",
                                    "out_dir": "the run directory to write"})
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    config = convert_reference_checkpoint(_CHECKPOINT.value, _OUT_DIR.value, _SAMPLE_RATE.value, _DATA_DIR.value,
                                          _CLAMP_STAGES.value)
    m = config.model
    data = "no --data_dir recorded" if config.data.data_dir == NO_DATA_DIR else f"data {config.data.data_dir}"
    print(f"wrote run {config.out_dir}: seed 0 = {_CHECKPOINT.value} (n_kernels {m.n_kernels}, n_layers {m.n_layers}, "
          f"d_state {m.d_state}, d_conv {m.d_conv}, expand_factor {m.expand_factor}, drive_lowpass_ms "
          f"{m.drive_lowpass_ms:g}, keep_const {m.keep_const}) at {m.sample_rate:g} Hz; {data}")


if __name__ == "__main__":
    cli.run(main, FLAGS)
