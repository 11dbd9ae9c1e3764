"""`python -m ouroboros_jax.train --flagfile=experiments/demo.flags`: the whole seed cross-validation.

Every flag of the reference's entry point (SPEC i) in snake_case with its default, plus
--bound_x, --bound_v, --clamp_stages, --unroll, --rollout_kernel, --loss_mode, --lr_schedule,
--max_consecutive_skips and the multi-host flags. See docs/cli.md.
"""

import pathlib


from absl import app, flags, logging

from ouroboros_jax.curriculum import HORIZON_SCHEDULES
from ouroboros_jax.data import ANNOTATION_FORMATS, DataConfig
from ouroboros_jax.dynamics import ROLLOUT_KERNELS
from ouroboros_jax.errors import InputError, Interrupted, parse_flags, report_input_errors
from ouroboros_jax.losses import LossWeights
from ouroboros_jax.model.selective_scan import SCAN_IMPLS
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.training.compilation import default_cache_dir, use_compilation_cache
from ouroboros_jax.training.config import LR_SCHEDULES, RunConfig
from ouroboros_jax.training.runtime import MATMUL_PRECISIONS, join_processes
from ouroboros_jax.training.run import resume_advice, train_and_evaluate
from ouroboros_jax.training.step import LOSS_MODES, ROLLOUT_BACKENDS
from ouroboros_jax.training.sweep import SWEEPABLE, parse_sweep

# The reference's --rollout-backend values: ways to run its one RK4 loop, which here is one lax.scan.
REFERENCE_ROLLOUT_BACKENDS = ("eager", "compile", "cudagraph")

# data
flags.DEFINE_string("data_dir", None, "Directory of <stem>.wav + <stem>.txt pairs; '@example' for the bundled finch.")
flags.DEFINE_string("out_dir", "poly_spectral", "Run directory (created; re-running resumes).")
flags.DEFINE_float("val_frac", 0.1, "Fraction of files held out for validation (file-level).")
flags.DEFINE_float("test_frac", 0.1, "Fraction of files held out for test (file-level).")
flags.DEFINE_integer("n_val_vocs", 8, "Cold-start validation vocalisations.")
flags.DEFINE_integer("n_test_vocs", 8, "Cold-start test vocalisations.")
flags.DEFINE_integer("silence_pad_samples", 2000, "Lead-in before each cold-start vocalisation, in samples.")
flags.DEFINE_integer("channel", None, "Channel to use from multi-channel files (default: files must be mono).")
flags.DEFINE_string("syllables", "", "Labels of the syllable types to train on, comma-separated (e.g. C or a,b); "
                    "empty: every syllable.")
flags.DEFINE_string("annotation_format", "ours", f"Format of the annotations: {', '.join(ANNOTATION_FORMATS)}.")
flags.DEFINE_string("annotation_dir", None, "Folder of the annotation files (for generic-seq and "
                    "birdsong-recognition-dataset also the file itself); default: beside the recordings.")
# sampler
flags.DEFINE_float("context_len", 0.05, "Training segment length in seconds.")
flags.DEFINE_float("edge_ms", 10.0, "MID windows keep this far from onsets and offsets.")
flags.DEFINE_float("silence_prefix_ms", 25.0, "Audio before the onset in ONSET windows.")
flags.DEFINE_float("silence_suffix_ms", 25.0, "Audio after the offset in OFFSET windows.")
flags.DEFINE_string("ratio", "0.4,0.4,0.2", "ONSET,OFFSET,MID proportions.")
flags.DEFINE_integer("max_segs", 6000, "Training segments to draw (<= 0: every window).")
flags.DEFINE_integer("batch_size", 8, "Segments per optimisation step.")
# model
flags.DEFINE_integer("n_kernels", 15, "Highest power of x and x' in the kernel polynomial (nTerms).")
flags.DEFINE_integer("n_layers", 3, "Mamba layers per encoder.")
flags.DEFINE_integer("d_state", 4, "Mamba state size.")
flags.DEFINE_integer("d_conv", 4, "Mamba convolution width.")
flags.DEFINE_integer("expand_factor", 10, "Mamba expansion factor.")
flags.DEFINE_float("drive_lowpass_ms", 1.0, "Sigma of the zero-phase Gaussian low-pass of the drives (0: off).")
flags.DEFINE_bool("keep_const", True, "Keep the constant kernel coefficient W[0,0].")
flags.DEFINE_bool("osc_init", False, "Start every seed as a marginal limit cycle.")
flags.DEFINE_float("lam", 1.068, "Kernel-weight penalty base (used by --loss_mode=mse_accel; recorded otherwise).")
flags.DEFINE_enum("encoder_scan", "auto", SCAN_IMPLS,
                  "Selective-scan implementation of the encoders (auto: fused on CPU, associative on GPU).")
# loss
flags.DEFINE_float("lam_spec", 1.0, "Weight of the multi-resolution STFT loss.")
flags.DEFINE_float("lam_tf", 1.0, "Weight of the teacher-forced acceleration anchor.")
flags.DEFINE_float("lam_env_log", 0.0, "Weight of the log-ratio envelope loss.")
flags.DEFINE_float("env_log_eps", 1e-4, "Floor of the log-ratio envelope loss.")
flags.DEFINE_float("lam_env", 0.0, "Weight of the linear envelope L1 loss.")
flags.DEFINE_float("env_ms", 2.0, "Sigma of the envelope filter in ms.")
flags.DEFINE_string("spec_configs", "256,64;512,128;1024,256", "STFT n_fft,hop pairs separated by ';'.")
flags.DEFINE_integer("h_min", 512, "Shortest rollout horizon (samples).")
flags.DEFINE_integer("h_max", 2048, "Longest rollout horizon (samples).")
flags.DEFINE_enum("h_schedule", "geom", HORIZON_SCHEDULES, "Horizon curriculum.")
flags.DEFINE_enum("rollout_backend", "scan", ROLLOUT_BACKENDS + REFERENCE_ROLLOUT_BACKENDS,
                  "How the rollout runs: one lax.scan, or DEER Newton iterations (the reference's eager, compile "
                  "and cudagraph are the scan).")
flags.DEFINE_integer("deer_max_iter", 30, "DEER: Newton iterations at most; an unconverged example falls back to the scan.")
flags.DEFINE_float("deer_tol", 1e-6, "DEER: converged when the trajectory satisfies every RK4 step to this.")
flags.DEFINE_integer("spec_warmup_epochs", 5, "Epochs over which lam_spec ramps up from 0.")
flags.DEFINE_integer("env_warmup_epochs", 0, "Epochs over which lam_env and lam_env_log ramp up.")
flags.DEFINE_float("ic_noise_rms", 1e-3, "RMS of the cold-start initial state on ONSET segments.")
flags.DEFINE_float("grad_clip", 5.0, "Global gradient-norm clip.")
flags.DEFINE_enum("loss_mode", "spectral_rollout", LOSS_MODES, "The method, or the legacy MSE baseline.")
flags.DEFINE_float("bound_x", 0.5, "Soft-tanh bound of x.")
flags.DEFINE_float("bound_v", 1.0, "Soft-tanh bound of x'.")
flags.DEFINE_bool("clamp_stages", True, "Bound the kernel's input inside every RK4 stage (off: the reference's form).")
flags.DEFINE_integer("unroll", 1, "Unroll factor of the rollout scan.")
flags.DEFINE_enum("rollout_kernel", "auto", ROLLOUT_KERNELS,
                  "What runs the rollout's scan and adjoint: xla (lax.scan), numba (CPU kernels on all cores; needs "
                  "numba) or auto (numba on CPU where numba is installed, else xla).")
# run
flags.DEFINE_integer("n_epochs", 50, "Training epochs.")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
flags.DEFINE_enum("lr_schedule", "constant", LR_SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_integer("n_seeds", 4, "Random seeds trained side by side.")
flags.DEFINE_float("cull_frac", 0.0, "Cull after this fraction of the epochs (0: no culling).")
flags.DEFINE_integer("cull_keep", 2, "Seeds kept by culling.")
flags.DEFINE_integer("save_freq", 5, "Checkpoint every this many epochs (and at the end).")
flags.DEFINE_integer("max_saved", 60, "Checkpoints kept.")
flags.DEFINE_integer("seed", 1234, "Seed of the file split, the sampler and the model seeds.")
flags.DEFINE_multi_string("sweep", [], f"NAME=v1,v2,...: train every combination of the swept values times --n_seeds "
                          f"seeds as members of one program (repeatable; NAME one of {', '.join(SWEEPABLE)}).")
flags.DEFINE_integer("max_consecutive_skips", 50, "A seed that skips this many steps in a row is stopped.")
flags.DEFINE_string("compilation_cache_dir", default_cache_dir(),
                    "Folder of JAX's persistent compilation cache, so a repeated or resumed run compiles nothing "
                    "it compiled before; empty: no cache.")
flags.DEFINE_integer("media_seeds", 4, "At each checkpoint, TensorBoard audio and figures for this many of the best "
                     "active seeds (0: none).")
# devices
flags.DEFINE_enum("matmul_precision", "highest", MATMUL_PRECISIONS,
                  "Precision of every matmul and contraction (encoders, the kernel in every RK4 stage): highest "
                  "(float32) or default (a GPU may use TF32).")
flags.DEFINE_integer("seed_chunk", 0, "Seeds per vmapped chunk of the epoch program, the chunks running one after "
                     "another to bound its memory; a multiple of the device count; 0: every seed at once.")
# multi-host
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, to run over several processes (hosts); "
                    "auto: from the cluster's environment (SLURM).")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts) with --coordinator_address.")
flags.DEFINE_integer("process_id", None, "This process's index with --coordinator_address.")

FLAGS = flags.FLAGS


def parse_spec_configs(text: str) -> tuple:
    """'256,64;512,128' -> ((256, 64), (512, 128))."""
    try:
        pairs = tuple(tuple(int(v) for v in pair.split(",")) for pair in text.split(";") if pair.strip())
    except ValueError:
        pairs = ()
    if not pairs or any(len(p) != 2 for p in pairs):
        raise InputError(f"--spec_configs={text}: expected n_fft,hop pairs separated by ';', e.g. 256,64;512,128")
    return pairs


def config_from_flags() -> RunConfig:
    """The one place where flags become configuration."""
    if not FLAGS.data_dir:
        raise InputError("--data_dir is required: a directory of <stem>.wav + <stem>.txt pairs, or @example for "
                         "the bundled finch")
    data = DataConfig(
        data_dir=FLAGS.data_dir, val_frac=FLAGS.val_frac, test_frac=FLAGS.test_frac, n_val_vocs=FLAGS.n_val_vocs,
        n_test_vocs=FLAGS.n_test_vocs, silence_pad_samples=FLAGS.silence_pad_samples, context_len=FLAGS.context_len,
        edge_ms=FLAGS.edge_ms, silence_prefix_ms=FLAGS.silence_prefix_ms, silence_suffix_ms=FLAGS.silence_suffix_ms,
        ratio=FLAGS.ratio, max_segs=FLAGS.max_segs, seed=FLAGS.seed, channel=FLAGS.channel, syllables=FLAGS.syllables,
        annotation_format=FLAGS.annotation_format, annotation_dir=FLAGS.annotation_dir,
    )
    model = ModelConfig(
        n_kernels=FLAGS.n_kernels, n_layers=FLAGS.n_layers, d_state=FLAGS.d_state, d_conv=FLAGS.d_conv,
        expand_factor=FLAGS.expand_factor, drive_lowpass_ms=FLAGS.drive_lowpass_ms, keep_const=FLAGS.keep_const,
        osc_init=FLAGS.osc_init, scan_impl=FLAGS.encoder_scan,
    )
    for name in ("n_kernels", "n_layers", "d_state", "d_conv", "expand_factor"):
        if getattr(FLAGS, name) < 1:
            raise InputError(f"--{name}={getattr(FLAGS, name)}: must be at least 1")
    backend = FLAGS.rollout_backend
    if backend in REFERENCE_ROLLOUT_BACKENDS:
        logging.warning("--rollout_backend=%s: the reference's eager, compile and cudagraph backends run the same "
                        "RK4 loop, which here is one lax.scan: the run uses --rollout_backend=scan", backend)
        backend = "scan"
    return RunConfig(
        data=data, model=model, out_dir=FLAGS.out_dir, n_epochs=FLAGS.n_epochs, lr=FLAGS.lr,
        lr_schedule=FLAGS.lr_schedule, n_seeds=FLAGS.n_seeds, cull_frac=FLAGS.cull_frac, cull_keep=FLAGS.cull_keep,
        save_freq=FLAGS.save_freq, max_saved=FLAGS.max_saved, batch_size=FLAGS.batch_size,
        loss=LossWeights(FLAGS.lam_spec, FLAGS.lam_tf, FLAGS.lam_env, FLAGS.lam_env_log), env_ms=FLAGS.env_ms,
        env_log_eps=FLAGS.env_log_eps, spec_configs=parse_spec_configs(FLAGS.spec_configs), h_min=FLAGS.h_min,
        h_max=FLAGS.h_max, h_schedule=FLAGS.h_schedule, spec_warmup_epochs=FLAGS.spec_warmup_epochs,
        env_warmup_epochs=FLAGS.env_warmup_epochs, ic_noise_rms=FLAGS.ic_noise_rms, grad_clip=FLAGS.grad_clip,
        bound_x=FLAGS.bound_x, bound_v=FLAGS.bound_v, clamp_stages=FLAGS.clamp_stages, unroll=FLAGS.unroll,
        rollout_kernel=FLAGS.rollout_kernel, rollout_backend=backend, deer_max_iter=FLAGS.deer_max_iter,
        deer_tol=FLAGS.deer_tol, loss_mode=FLAGS.loss_mode, lam=FLAGS.lam,
        max_consecutive_skips=FLAGS.max_consecutive_skips, sweep=parse_sweep(FLAGS.sweep),
        matmul_precision=FLAGS.matmul_precision, seed_chunk=FLAGS.seed_chunk, media_seeds=FLAGS.media_seeds,
    )


@report_input_errors
def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --helpfull)")
    if FLAGS.coordinator_address:
        join_processes(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    config = config_from_flags()
    use_compilation_cache(FLAGS.compilation_cache_dir)
    try:
        train_and_evaluate(config)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {resume_advice(pathlib.Path(config.out_dir).absolute())}") from None
    print("PIPELINE DONE")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
