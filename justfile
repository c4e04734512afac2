# ddpm's tasks. The two that matter: `just run experiments/<x>.toml` and `just test`.
# Every recipe that needs the binary sets up .venv (torch 2.11.0, whose libtorch tch links against)
# and builds it first; both steps do nothing when already done.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

export VIRTUAL_ENV := justfile_directory() / ".venv"
export PATH := VIRTUAL_ENV / "bin" + ":" + env("PATH")
# torch-sys finds libtorch through the venv's python; build.rs writes its folder as the rpath.
export LIBTORCH_USE_PYTORCH := "1"

bin := justfile_directory() / "target/release/ddpm"

# List the recipes
default:
    @just --list

# Create .venv with torch==2.11.0 from PyPI when it is missing (about 4.6 GB; idempotent)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    check='import sys, torch; sys.exit(torch.__version__.split("+")[0] != "2.11.0")'
    if [ -x .venv/bin/python ] && .venv/bin/python -c "$check" 2>/dev/null; then exit 0; fi
    echo "setup: creating .venv with torch==2.11.0 (about 4.6 GB download)"
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.11.0
    .venv/bin/python -c "$check"

# Headers for one run across processes that the torch wheel lacks: gloo's (Debian's libgloo-dev,
# extracted into .venv/gloo without root) and, for NCCL, the CUDA runtime's crt/ and nv/ (two header
# wheels). Without them ddpm still builds, for runs of one process.
c10d-headers: setup
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -f .venv/gloo/usr/include/gloo/context.h ]; then
        if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
            tmp=$(mktemp -d)
            # The version the shim was checked with (Debian bookworm's), else the distribution's own.
            if (cd "$tmp" && { apt-get download "libgloo-dev=0.0~git20220518.5b14351-3" || apt-get download libgloo-dev; } >/dev/null 2>&1); then
                dpkg -x "$tmp"/libgloo-dev_*.deb .venv/gloo
            else
                echo "warning: apt-get download libgloo-dev failed (try apt-get update): runs of one process only"
            fi
            rm -rf "$tmp"
        else
            echo "warning: no apt-get/dpkg for gloo's headers (Debian's libgloo-dev): runs of one process only"
        fi
    fi
    torch_dir=$(echo .venv/lib/python3*/site-packages/torch)
    if [ -f "$torch_dir/lib/libtorch_cuda.so" ] && [ ! -f "$torch_dir/../nvidia/cu13/include/crt/host_config.h" ]; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
            "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85"
    fi

# Build the release binary against .venv's libtorch
build: setup c10d-headers
    cargo build --release --locked

# Run an experiment: just run experiments/cosine_vs_linear.toml [--profile full] [--set key=value] [--device cuda] [--launcher slurm --gres gpu:1]
run *args: build
    {{bin}} run "$@"

# List an experiment's runs and whether each is done
plan *args: build
    {{bin}} plan "$@"

# Where each run of an experiment stands (state, step, loss, device; its Slurm task if submitted there)
status *args: build
    {{bin}} status "$@"

# Cancel an experiment's Slurm jobs that are still queued or running
cancel *args: build
    {{bin}} cancel "$@"

# Download and verify a dataset (mnist, fashion_mnist) or the FID network's weights (inception)
fetch name: build
    {{bin}} data fetch "$1"

# The TensorBoard version the tests read event files with, and `just tensorboard` serves.
tensorboard_version := "2.21.0"

# Install TensorBoard into .venv when it is missing
tensorboard-setup: setup
    #!/usr/bin/env bash
    set -euo pipefail
    if ! .venv/bin/python -c "import tensorboard" 2>/dev/null; then
        echo "installing tensorboard=={{tensorboard_version}} into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "tensorboard=={{tensorboard_version}}"
    fi
    # The tests read the analysis Parquet files back with Python's polars.
    if ! .venv/bin/python -c "import polars" 2>/dev/null; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "polars==1.35.2"
    fi
    # Seed 001's model and diffusion are lucidrains' package itself (tests/seeds.rs runs it as the
    # oracle); torch stays pinned so that pip does not replace the libtorch ddpm links against.
    if ! .venv/bin/python -c "import denoising_diffusion_pytorch, safetensors" 2>/dev/null; then
        echo "installing denoising-diffusion-pytorch==2.3.4 into .venv (test oracle for seed 001)"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "denoising-diffusion-pytorch==2.3.4" "torch==2.11.0"
    fi
    # Precision and recall are checked against `prdc` (Naeem et al.'s package, which computes
    # Kynkäänniemi et al.'s k-NN precision and recall): tests/metrics.rs.
    if ! .venv/bin/python -c "import prdc" 2>/dev/null; then
        echo "installing prdc==0.2 into .venv (test oracle for precision and recall)"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "prdc==0.2" "scikit-learn==1.9.1" "torch==2.11.0"
    fi
    # The samplers, the learned range, the posterior and zero terminal SNR are checked against
    # diffusers' schedulers themselves (tests/samplers.rs).
    if ! .venv/bin/python -c "import diffusers" 2>/dev/null; then
        echo "installing diffusers==0.42.1 into .venv (test oracle for the samplers)"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "diffusers==0.42.1" "torch==2.11.0"
    fi
    # EDM and flow matching are checked against k-diffusion, Meta's flow_matching and diffusers'
    # flow-matching schedulers (tests/formulations.rs). The packages themselves come without their
    # dependencies (k-diffusion's would pull wandb, clean-fid, kornia, …): only what the tested modules
    # import is installed, torch pinned.
    oracles='import importlib.util as u, flow_matching.solver, ema_pytorch, torchsde, einops, dctorch, torchvision, scipy, tqdm, PIL, safetensors; assert u.find_spec("k_diffusion")'
    if ! .venv/bin/python -c "$oracles" 2>/dev/null; then
        echo "installing k-diffusion==0.1.1.post1, flow_matching==1.0.10, ema-pytorch==0.8.3 into .venv (test oracles for the formulations)"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
            "k-diffusion==0.1.1.post1" "flow_matching==1.0.10" "ema-pytorch==0.8.3" "torchdiffeq==0.2.5" \
            "torchsde==0.2.6" "trampoline==0.1.2" "dctorch==0.1.2" "torchvision==0.26.0"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            "scipy==1.17.1" "einops==0.8.2" "tqdm==4.70.1" "pillow==13.0.0" "safetensors==0.8.0" "torch==2.11.0"
    fi

# Serve an experiment's runs in TensorBoard (under their labels, with the HParams dashboard): just tensorboard experiments/x.toml [--port 6006]
tensorboard experiment *args: build tensorboard-setup
    #!/usr/bin/env bash
    set -euo pipefail
    logdir=$({{bin}} logdir "{{experiment}}")
    echo "TensorBoard on $logdir"
    exec .venv/bin/tensorboard --logdir "$logdir" {{args}}

# Tables, plots and report.md of an experiment in analysis/<experiment>/ (also done by `just run`)
analyze *args: build
    {{bin}} analyze "$@"

# Reproduce a committed result: just reproduce <commit> experiments/x.toml [--tolerance 1e-3] [--twice] [--keep]
reproduce *args: build
    {{bin}} reproduce "$@"

# Re-run one finished run from its recorded configuration and code, and compare: just verify results/runs/<hash>
verify *args: build
    {{bin}} verify "$@"

# Evaluate finished runs again under another spec: just eval experiments/x.toml --spec num_samples=1000
eval *args: build
    {{bin}} eval "$@"

# Run the test suite (unit tests; end-to-end tests through the binary; event files read by TensorBoard;
# FID with the real Inception network, checked against PyTorch)
test: build tensorboard-setup
    # The tests of one run across processes need gloo (`just c10d-headers`).
    {{bin}} device | grep -q 'gloo yes' || { echo "test: this build has no gloo: just c10d-headers could not fetch Debian's libgloo-dev (apt-get update?)"; exit 1; }
    {{bin}} data fetch mnist
    {{bin}} data fetch fashion_mnist
    {{bin}} data fetch inception
    # The sequential stopping rule's simulation prints its error rate and power; then everything else.
    cargo test --release --locked --lib analysis::sequential -- --nocapture
    cargo test --release --locked -- --skip analysis::sequential::

# Speed of each recipe's model here (train img/s, sampling, FID features, memory) against PyTorch eager,
# and where a training step's time goes: writes analysis/bench/<device>.csv and profile-<device>.csv
bench *args: build
    {{bin}} data fetch mnist
    {{bin}} data fetch fashion_mnist
    {{bin}} data fetch inception
    {{bin}} bench --compare --profile "$@"

# One run trained by 1 and by 2 processes on the CPU: images/s and the all-reduce's cost per step
# (analysis/bench/parallel-cpu.csv)
bench-parallel *args: build
    {{bin}} data fetch mnist
    {{bin}} data fetch fashion_mnist
    {{bin}} bench --processes 1,2 "$@"

# Prepare the GPU check (bench/gpu_check.py): build, fetch the data, stage the binary and data under
# .gpu-check/ within the device tool's 64 MiB carry, and print the device command to run. `--dry-run`
# prints what would be carried and its size only.
gpu-check *args: build
    {{bin}} data fetch mnist
    {{bin}} data fetch fashion_mnist
    .venv/bin/python bench/gpu_check.py stage "$@"

# Formatting and lints, as CI would want them
lint: setup
    cargo fmt --check
    cargo clippy --release --locked --all-targets -- -D warnings
