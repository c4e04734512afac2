"""`just gpu-check`: the CUDA path of ddpm, measured in one prepared run on a GPU machine.

The GPU machines this project can reach have torch 2.11.0 in their own `python3`, no Rust, no network,
take a carried tree of at most 64 MiB and are lent for about 15 minutes in all. So the work is split:

    python3 bench/gpu_check.py stage     # here: copy the release binary and the data into .gpu-check/
                                         # (under the carry limit) and print the device command to use
    python3 bench/gpu_check.py dry-run   # what `stage` would carry, and its size; writes nothing
    python3 bench/gpu_check.py run --device cuda      # there: measure, write $OUT/cuda.csv + log
    python3 bench/gpu_check.py collect DIR            # here: copy what came back into analysis/bench/

`<device>.csv` columns: part, model, variant, metric, value, unit, reference (PyTorch eager on the same
device in the same run for `bench`; the notebook's log for `notebook`), ratio = value / reference, note.

`run` measures, within a time budget (default 330 s, for a device timeout of 400 s; parts that would not
fit are skipped and say so), most valuable first:
  1. `ddpm device`; the profile `ddpm run --device cuda` chooses for the main job (`full`);
  1b. a run in a group of one rank (NCCL on CUDA): the same weights as without a group;
  2. one short training run of every registered model (`ddpm models`): it trains, checkpoints, is
     killed with SIGKILL after its first checkpoint, resumes, and must end with the same weights and
     EMA (sha256) as an uninterrupted run under `train.deterministic = true` (strict: an operation
     without a deterministic kernel fails the run);
  3. `ddpm bench --compare` in fp32 for the four recipe models: training images/s against
     `bench/pytorch_reference.py` on the same device in the same run, sampling evaluations/s, peak
     device memory (libtorch's caching allocator), and the GPU's utilisation (nvidia-smi, sampled
     every 100 ms) over each measured window;
  4. a sampling step of the main job's model at evaluation batches of 64 (the CPU's default) and 500
     (the GPU's): what the evaluation of the `full` profile costs;
  5. `ddpm run --runs-per-device K` for K = 1, 2, 4 on the blog model: total images/s;
  6. the notebook recipe (`experiments/seed_notebook_mnist32.toml`, the 62M-parameter BatchNorm
     U-Net at its full profile's batch of 128): images/s and the projected wall time of its 20 epochs
     against the notebook's own log;
  7. `ddpm bench --compare` with `train.tf32`, `train.precision = "bf16"` and `train.channels_last`.
`--device cpu --tiny` runs the same code with tiny sizes (the test suite does, so that it cannot rot).

Everything `run` writes goes under `$OUT` (the device tool's folder) or `--out`: `<device>.csv` (one row
per measurement, columns as above),
`gpu-check.log` (every command, its output's tail and its time) and each bench's own CSV. The staged
folder holds the stripped binary and the data in xz (a registry's .gz file gzipped again there); `run` unpacks it
into its scratch folder first. Run
directories (checkpoints of the large models are hundreds of MB) live in a scratch folder that is
removed at the end. Only the standard library is used: the device's python3 has torch, nothing else.
"""
import argparse
import csv
import glob
import gzip
import importlib.util
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = os.path.join(ROOT, ".gpu-check")
CARRY_LIMIT = 64 << 20
# The device is held for about 15 minutes in all, start-up (a few minutes) included: one run must leave
# time for a second. Parts are skipped once the budget would be overrun; the timeout leaves the last
# part a minute of slack, and the device tool's own limit is the timeout.
BUDGET_SECONDS = 330.0
TIMEOUT_SECONDS = 400
# What the device tool copies besides the carried folder: the tracked tree (and untracked, not ignored
# files). Kept free in the budget so the carried folder plus the tree stay under the limit.
TREE_MARGIN = 2 << 20

# The notebook's own log (seed 003, its training cell's output): seconds per epoch of 468 batches of
# 128 for its 20 epochs, on the notebook author's GPU.
NOTEBOOK_EPOCH_SECONDS = [47, 43, 46, 45, 47, 44, 47, 46, 48, 48, 46, 48, 44, 45, 48, 48, 47, 45, 47, 45]
NOTEBOOK_STEPS_PER_EPOCH = 468

BENCH_VARIANTS = [
    ("fp32", []),
    ("tf32", ["train.tf32=true"]),
    ("bf16", ['train.precision="bf16"']),
    ("channels_last", ["train.channels_last=true"]),
]

# Widths for `--tiny` (the CPU test): the same code path, a fraction of the arithmetic.
TINY_MODEL_KEYS = {
    "simple_bn": 'channels = [8, 16, 32, 64, 128]',
    "unet": "dim = 8\nattn_heads = 1\nattn_dim_head = 8",
    "lucidrains": "dim = 8\ndim_mults = [1, 2]\nattn_heads = 1\nattn_dim_head = 8",
    "ddpm_cifar": "ch = 32\nch_mult = [1, 2]\nnum_res_blocks = 1",
}


# ---------------------------------------------------------------------------------------------------
# Staging (here)


def tracked_tree_bytes():
    """Bytes of the files git would send: tracked, and untracked but not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    total = 0
    for name in out.split(b"\0"):
        path = os.path.join(ROOT, name.decode())
        if name and os.path.isfile(path):
            total += os.path.getsize(path)
    return total


def data_dir():
    return os.environ.get("DDPM_DATA_DIR") or os.path.join(ROOT, "data")


def folder_files(path):
    """Every regular file under `path`, with its size, skipping hidden entries (a fetch's staging)."""
    found = []
    for base, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith("."):
                p = os.path.join(base, f)
                found.append((p, os.path.getsize(p)))
    return found


def xz_into(src, target, opener=open):
    """`target` (a .xz file) holding what `opener(src)` reads; returns its size. The binary compresses
    to two thirds of its gzip size this way (7.4 against 11.1 MiB), which leaves the carry room for
    both datasets."""
    with opener(src, "rb") as f, lzma.open(target, "wb", preset=6) as x:
        shutil.copyfileobj(f, x, 1 << 20)
    return os.path.getsize(target)


def xz_cached(src, target):
    """`target` (a .xz file) holding the content of `src` (gunzipped first when `src` is a .gz file:
    xz stores MNIST's four files in 9.0 MiB against 11.0 gzipped, Fashion-MNIST's in 25.2 against the
    registry's 29.4); returns its size. Compressing takes about a minute for both data sets, so the
    result is kept in the data folder's hidden `.gpu-check-cache/` under the source's size and
    modification time, and later stages copy it."""
    st = os.stat(src)
    rel = os.path.relpath(src, data_dir())
    cached = os.path.join(data_dir(), ".gpu-check-cache", f"{rel}.{st.st_size}-{st.st_mtime_ns}.xz")
    if not os.path.isfile(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = f"{cached}.tmp-{os.getpid()}"
        xz_into(src, tmp, gzip.open if src.endswith(".gz") else open)
        os.replace(tmp, cached)
    shutil.copy2(cached, target)
    return os.path.getsize(target)


# What the device needs, in order of need: (name, why, required). MNIST is needed by every training
# part; Fashion-MNIST by the practical-work recipe's bench. The Inception weights (91 MiB of floats,
# which hardly compress) never fit beside the binary and the datasets: they are optional, and the FID
# feature speed is then measured on the CPU only.
STAGED_DATA = [
    ("mnist", "MNIST (every part)", True),
    ("fashion_mnist", "Fashion-MNIST (the unet recipe's bench)", True),
    ("inception", "the FID network (feature images/s)", False),
]


class StageError(Exception):
    """A required part of the stage is missing or does not fit: `stage` fails, naming it."""


def stage_into(dest, binary, carry_limit=CARRY_LIMIT):
    """Fills `dest` with what the device needs, in order of need, each file in xz (the binary stripped
    first), while the carried folder and the tree stay under the
    limit. A required data set that is missing or does not fit raises StageError naming it (never a
    stage that silently lacks it). Returns (staged [(name, bytes, why)], left out [(name, bytes, why)],
    budget)."""
    budget = carry_limit - tracked_tree_bytes() - TREE_MARGIN
    if not os.path.isfile(binary):
        raise SystemExit(f"gpu-check: no binary at {binary}: build it first (`just build`)")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    staged, left_out, files, missing = [], [], {}, []
    stripped = os.path.join(dest, "ddpm.stripped")
    if shutil.which("strip"):
        subprocess.run(["strip", "-o", stripped, binary], check=True)
    else:
        shutil.copy2(binary, stripped)
    size = xz_into(stripped, os.path.join(dest, "ddpm.xz"))
    os.remove(stripped)
    staged.append(("ddpm.xz", size, f"the release binary, stripped and xz-compressed ({os.path.getsize(binary) / 2**20:.1f} MiB as built)"))
    files["ddpm"] = {"stored": "ddpm.xz", "bytes": size}
    used = size
    if used > budget:
        missing.append(f"the binary ({size / 2**20:.1f} MiB xz) is over the budget of {budget / 2**20:.1f} MiB")
    for name, why, required in STAGED_DATA:
        found = folder_files(os.path.join(data_dir(), name))
        raw = sum(n for _, n in found)
        if not found:
            reason = f"not in the data folder {data_dir()}: fetch it first (`just fetch {name}`)"
            (missing.append(f"{name}: {reason}") if required else left_out.append((name, 0, reason)))
            continue
        # Float weights hardly compress: do not spend the time on what cannot fit. Image files do
        # (MNIST's 52 MiB of idx to 9 MiB in xz): they are compressed and then checked.
        if not required and used + 0.8 * raw > budget and not all(p.endswith(".gz") for p, _ in found):
            left_out.append((name, raw, f"optional: {raw / 2**20:.1f} MiB does not fit ({(budget - used) / 2**20:.1f} MiB left)"))
            continue
        group, total = {}, 0
        for p, n in found:
            rel = os.path.join("data", os.path.relpath(p, data_dir()))
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # A .gz file is stored as its content in xz and gzipped again on the device (its loader
            # checks the decompressed content's sha256, not the archive's).
            stored = (rel[:-3] if p.endswith(".gz") else rel) + ".xz"
            group[rel] = {"stored": stored, "bytes": xz_cached(p, os.path.join(dest, stored)),
                          "regzip": p.endswith(".gz")}
            total += group[rel]["bytes"]
        if used + total > budget:
            for entry in group.values():
                os.remove(os.path.join(dest, entry["stored"]))
            reason = f"{total / 2**20:.1f} MiB compressed does not fit ({max(budget - used, 0) / 2**20:.1f} MiB left of {budget / 2**20:.1f})"
            (missing.append(f"{name} ({why}): {reason}") if required else left_out.append((name, total, "optional: " + reason)))
            continue
        files.update(group)
        used += total
        staged.append((f"data/{name}/ ({len(group)} files)", total, why))
    if missing:
        print_plan(staged, left_out, budget)
        shutil.rmtree(dest, ignore_errors=True)
        raise StageError("gpu-check: cannot stage what the check needs; nothing was staged:\n  " + "\n  ".join(missing))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(dest, "manifest.json"), "w") as f:
        json.dump({"commit": commit, "files": files, "left_out": [n for n, _, _ in left_out]}, f, indent=1)
    return staged, left_out, budget


def print_plan(staged, left_out, budget):
    tree = tracked_tree_bytes()
    print(f"gpu-check carries .gpu-check/ beside the tree ({tree / 2**20:.1f} MiB):")
    for name, size, why in staged:
        print(f"  {size / 2**20:8.2f} MiB  {name:34}  {why}")
    total = sum(n for _, n, _ in staged)
    print(f"  {total / 2**20:8.2f} MiB  in all (budget {budget / 2**20:.1f} MiB: 64 MiB less the tree and a margin)")
    for name, size, why in left_out:
        print(f"  left out: {name}: {why}" + ("; the FID feature speed is not measured on the GPU" if name == "inception" else ""))
    return total


def device_command():
    return (f'run(command="python3 bench/gpu_check.py run --device cuda", carry=[".gpu-check"], timeout_s={TIMEOUT_SECONDS})\n'
            "then: python3 bench/gpu_check.py collect <files_at>   (copies cuda.csv and gpu-check.log "
            "into analysis/bench/)")


def cmd_stage(args):
    limit = int(args.carry_limit_mib * 2**20)
    try:
        if args.dry_run:
            with tempfile.TemporaryDirectory(prefix="ddpm-gpu-check-dry-") as tmp:
                staged, left_out, budget = stage_into(os.path.join(tmp, "stage"), args.binary, limit)
            print_plan(staged, left_out, budget)
            print("dry run: nothing written. The device command would be:\n  " + device_command())
            return 0
        dest = args.dir or STAGE
        staged, left_out, budget = stage_into(dest, args.binary, limit)
    except StageError as e:
        print(str(e), file=sys.stderr)
        return 2
    total = print_plan(staged, left_out, budget)
    if total > budget:
        raise SystemExit(f"gpu-check: {total / 2**20:.1f} MiB staged is over the budget of {budget / 2**20:.1f} MiB")
    print(f"staged in {dest}. On a GPU machine (the device tool), with time left for one rerun:\n  " + device_command())
    return 0


def unpack_stage(stage, into):
    """The staged folder unpacked into `into`: returns (binary, data folder)."""
    with open(os.path.join(stage, "manifest.json")) as f:
        manifest = json.load(f)
    for name, entry in manifest["files"].items():
        src, target = os.path.join(stage, entry["stored"]), os.path.join(into, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if entry["stored"] == name:
            shutil.copy2(src, target)
        else:
            opener = lzma.open if entry["stored"].endswith(".xz") else gzip.open
            writer = (lambda t: gzip.open(t, "wb", compresslevel=1)) if entry.get("regzip") else (lambda t: open(t, "wb"))
            with opener(src, "rb") as g, writer(target) as f:
                shutil.copyfileobj(g, f, 1 << 20)
    os.chmod(os.path.join(into, "ddpm"), 0o755)
    return os.path.join(into, "ddpm"), os.path.join(into, "data")


def cmd_collect(args):
    out = os.path.join(ROOT, "analysis", "bench")
    copied = []
    for name in ["cuda.csv", "gpu-check.log"] + [os.path.basename(p) for p in glob.glob(os.path.join(args.dir, "bench-*.csv"))]:
        src = os.path.join(args.dir, name)
        if os.path.isfile(src):
            shutil.copy(src, os.path.join(out, name))
            copied.append(name)
    print("copied into analysis/bench/: " + (", ".join(copied) or "nothing (no cuda.csv there)"))
    return 0 if "cuda.csv" in copied else 1


# ---------------------------------------------------------------------------------------------------
# Measuring (there)


class Check:
    """The rows, the log and the clock of one `run`."""

    def __init__(self, args):
        self.args = args
        self.device = args.device
        self.slug = "cuda" if args.device.startswith("cuda") else "cpu"
        self.out = args.out or os.environ.get("OUT") or os.path.join(ROOT, "target", "gpu-check-out")
        os.makedirs(self.out, exist_ok=True)
        self.csv_path = os.path.join(self.out, f"{self.slug}.csv")
        self.log = open(os.path.join(self.out, "gpu-check.log"), "w")
        self.scratch = tempfile.mkdtemp(prefix="ddpm-gpu-check-")
        self.rows = []
        self.started = time.monotonic()
        stage = args.stage or STAGE
        staged_binary = staged_data = None
        if os.path.isfile(os.path.join(stage, "manifest.json")):
            staged_binary, staged_data = unpack_stage(stage, os.path.join(self.scratch, "stage"))
        built = os.path.join(ROOT, "target", "release", "ddpm")
        self.binary = args.binary or staged_binary or (built if os.path.isfile(built) else None)
        if self.binary is None:
            raise SystemExit("gpu-check: no ddpm binary (.gpu-check/ or target/release/ddpm); run `just gpu-check` here first")
        self.data = args.data or staged_data or data_dir()
        self.env = dict(os.environ)
        self.env["DDPM_DATA_DIR"] = self.data
        self.env.pop("DDPM_RESULTS_DIR", None)
        lib = torch_lib()
        if lib:
            # The binary's rpath points at this machine's .venv; there, the local torch's libtorch.
            self.env["LD_LIBRARY_PATH"] = lib + os.pathsep + self.env.get("LD_LIBRARY_PATH", "")
        self.util = Utilisation() if self.slug == "cuda" else None
        self.say(f"gpu-check on {self.device}{' (tiny)' if args.tiny else ''}: binary {self.binary}, data {self.data}, "
                 f"torch lib {lib}, out {self.out}, budget {args.budget_seconds} s")

    def elapsed(self):
        return time.monotonic() - self.started

    def left(self):
        return self.args.budget_seconds - self.elapsed()

    def say(self, text):
        line = f"[{self.elapsed():7.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def row(self, part, model, variant, metric, value, unit="", reference="", note=""):
        """`reference`: the same quantity from PyTorch eager on the same device in the same run (bench),
        or from the notebook's own log (notebook); `ratio` = value / reference."""
        ratio = ""
        if isinstance(value, (int, float)) and isinstance(reference, (int, float)) and reference:
            ratio = f"{value / reference:.4f}"
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))
        self.rows.append([part, model, variant, metric, fmt(value), unit, fmt(reference), ratio, note])
        self.write_csv()

    def write_csv(self):
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["part", "model", "variant", "metric", "value", "unit", "reference", "ratio", "note"])
            w.writerows(self.rows)
        os.replace(tmp, self.csv_path)

    def ddpm(self, args, timeout=None, check=True):
        """Runs the binary; logs the command, its time and its output's tail."""
        cmd = [self.binary] + args
        t0 = time.monotonic()
        limit = max(60.0, min(timeout or 1e9, self.left() + 30))
        try:
            p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=limit, cwd=ROOT)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = "timeout", str(e.stdout or ""), str(e.stderr or "")
        seconds = time.monotonic() - t0
        self.say(f"$ ddpm {' '.join(args)}  -> {rc} in {seconds:.1f}s")
        for line in (out + err).strip().splitlines()[-25:]:
            self.log.write("    " + line + "\n")
        self.log.flush()
        if check and rc != 0:
            raise RuntimeError(f"ddpm {' '.join(args[:2])} exited {rc}: {(err or out).strip()[-600:]}")
        return out, seconds

    def skip(self, part, what, seconds_needed):
        only = self.args.only
        if only and part not in only and what not in only:
            return True
        if self.left() < seconds_needed:
            self.say(f"skipped {what}: {self.left():.0f} s of the budget left, it needs about {seconds_needed} s")
            self.row(part, "", what, "skipped", "", note=f"over the time budget ({self.left():.0f} s left)")
            return True
        return False

    def close(self):
        if self.util:
            self.util.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.say(f"done: {len(self.rows)} rows in {self.csv_path}")
        self.log.close()


def torch_lib():
    """torch's lib folder for this Python, found without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    lib = os.path.join(os.path.dirname(spec.origin), "lib")
    return lib if os.path.isdir(lib) else None


class Utilisation:
    """nvidia-smi's GPU utilisation (% of the last sample period with a kernel running), every 100 ms,
    stamped with this process's clock."""

    def __init__(self):
        self.samples = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                self.samples.append((time.time(), float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                pass

    def mean_over(self, start, end):
        inside = [u for t, u, _ in self.samples if start <= t <= end]
        return (sum(inside) / len(inside), len(inside)) if inside else (None, 0)

    def stop(self):
        if self.proc:
            self.proc.terminate()


def experiment_toml(name, model, tiny, steps, batch, log_every, checkpoint_every, seeds=None, limit=1024,
                    include=None, extra=""):
    keys = TINY_MODEL_KEYS.get(model, "") if tiny else ""
    seeds_line = f"seeds = {seeds}\n" if seeds else ""
    include_line = f'include = "{include}"\n' if include else ""
    model_table = "" if include else f'[model]\nname = "{model}"\n{keys}\n'
    data_table = "" if include else f'[data]\nname = "mnist"\nimage_size = 32\nlimit = {limit}\n'
    return f"""seed = 0
[experiment]
name = "{name}"
{include_line}{seeds_line}
{data_table}
{model_table}
[train]
steps = {steps}
batch_size = {batch}
log_every = {log_every}
checkpoint_every = {checkpoint_every}
deterministic = true
{extra}
[sample]
num_samples = 4
trajectory = []
sampler = {{ name = "ddim", steps = 2 }}
[eval]
fid = false
bpd = false
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_dirs(results):
    return sorted(glob.glob(os.path.join(results, "runs", "*")))


def steady_images_per_sec(run):
    """Mean images/s of the logged windows after the first (the warm-up)."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    later = [r["images_per_sec"] for r in records[1:]] or [r["images_per_sec"] for r in records]
    return sum(later) / len(later) if later else None


# Part 1 -------------------------------------------------------------------------------------------


def part_device(c):
    out, _ = c.ddpm(["device"])
    for line in out.strip().splitlines():
        c.say("  " + line)
    available = "cuda available: true" in out
    c.row("device", "", "", "cuda_available", str(available).lower(), note=out.strip().splitlines()[0] if out else "")
    count = out.rsplit("devices:", 1)[-1].strip() if "devices:" in out else ""
    c.row("device", "", "", "cuda_devices", count)
    return available


def registered_models(c):
    out, _ = c.ddpm(["models"])
    names = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ") and line.split()]
    c.say("registered models: " + ", ".join(names))
    return names


def part_train_resume(c, model):
    tiny = c.args.tiny
    steps, ckpt = (4, 2) if tiny else (20, 10)
    batch = 4 if tiny else 128
    exp = write(os.path.join(c.scratch, f"train_{model}.toml"),
                experiment_toml(f"gpu_check_{model}", model, tiny, steps, batch, log_every=ckpt // 2 or 1,
                                checkpoint_every=ckpt, limit=256 if tiny else 1024))
    clean, killed = (os.path.join(c.scratch, f"train-{model}-{k}") for k in ("clean", "killed"))
    _, clean_seconds = c.ddpm(["run", exp, "--device", c.device, "--results", clean])
    clean_status = read_json(os.path.join(run_dirs(clean)[0], "status.json"))

    # The same run, killed (SIGKILL to the runner; its run's process dies with it) right after its
    # first checkpoint, then run again.
    proc = subprocess.Popen([c.binary, "run", exp, "--device", c.device, "--results", killed], env=c.env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    deadline = time.monotonic() + max(30.0, min(300.0, c.left()))
    while time.monotonic() < deadline and proc.poll() is None:
        found = glob.glob(os.path.join(killed, "runs", "*", "checkpoints", "step-*.json"))
        if found:
            first = min(int(os.path.basename(p)[5:-5]) for p in found)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait()
    dirs = run_dirs(killed)
    status_path = os.path.join(dirs[0], "status.json") if dirs else ""
    done_before = os.path.exists(status_path) and read_json(status_path).get("state") == "done"
    out, _ = c.ddpm(["run", exp, "--device", c.device, "--results", killed])
    resumed = "resuming from the checkpoint at step" in out
    status = read_json(os.path.join(run_dirs(killed)[0], "status.json"))
    same = (status.get("weights_sha256") == clean_status.get("weights_sha256")
            and status.get("ema_sha256") == clean_status.get("ema_sha256"))
    exercised = first is not None and not done_before and resumed
    note = (f"killed after the checkpoint at step {first}, resumed" if exercised
            else "NOT exercised: the run ended before the kill" if done_before
            else f"the kill came at step {first}; resumed: {resumed}")
    c.row("train", model, "fp32", "parameters", clean_status.get("parameters"))
    c.row("train", model, "fp32", "steps", steps, note=f"batch {batch}, checkpoint every {ckpt}, deterministic")
    c.row("train", model, "fp32", "run_seconds", clean_seconds, "s", note="the whole `ddpm run`, process start included")
    c.row("train", model, "fp32", "images_per_sec", clean_status.get("images_per_sec"), "img/s",
          note="the run's average, warm-up included")
    c.row("train", model, "fp32", "resumed_after_sigkill", str(exercised).lower(), note=note)
    c.row("train", model, "fp32", "same_weights_as_uninterrupted", str(same and exercised).lower(),
          note="sha256 of model.safetensors and ema.safetensors" + ("" if same else
               f": {status.get('weights_sha256', '')[:12]} vs {clean_status.get('weights_sha256', '')[:12]}"))
    c.say(f"{model}: resumed {exercised}, same weights {same}")


# Part 1b: one run across processes, one rank ----------------------------------------------------


def part_parallel(c):
    """A group of one rank (NCCL on CUDA, gloo on the CPU): the join, the gradients' bucketed all-reduce
    and the per-image losses' on the device, against the same run without a group (the same weights:
    a group of one sums nothing)."""
    import socket
    tiny = c.args.tiny
    steps, batch = (4, 4) if tiny else (20, 128)
    exp = write(os.path.join(c.scratch, "parallel.toml"),
                experiment_toml("gpu_check_parallel", "simple", tiny, steps, batch, log_every=steps // 2,
                                checkpoint_every=steps, limit=256 if tiny else 1024))
    plain, grouped = (os.path.join(c.scratch, f"parallel-{k}") for k in ("plain", "group"))
    c.ddpm(["run", exp, "--device", c.device, "--results", plain])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(c.env, DDPM_WORLD_SIZE="1", DDPM_RANK="0", DDPM_MASTER_ADDR="127.0.0.1", DDPM_MASTER_PORT=str(port))
    t0 = time.monotonic()
    p = subprocess.run([c.binary, "run", exp, "--device", c.device, "--results", grouped], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=max(60.0, c.left()))
    c.say(f"$ DDPM_WORLD_SIZE=1 ddpm run parallel.toml  -> {p.returncode} in {time.monotonic() - t0:.1f}s")
    a, b = (read_json(os.path.join(run_dirs(r)[0], "status.json")) for r in (plain, grouped))
    log = open(os.path.join(run_dirs(grouped)[0], "log.txt")).read()
    backend = "NCCL" if "rank 0 of 1 (NCCL)" in log else "gloo" if "rank 0 of 1 (gloo)" in log else "none"
    c.row("parallel", "simple", "1 rank", "backend", backend, note=f"exit {p.returncode}; " + (b.get("error") or "")[-200:])
    c.row("parallel", "simple", "1 rank", "ranks_max_weight_difference",
          (b.get("train_metrics") or {}).get("ranks_max_weight_difference"))
    c.row("parallel", "simple", "1 rank", "same_weights_as_without_group",
          str(a.get("weights_sha256") == b.get("weights_sha256") and b.get("state") == "done").lower())
    c.row("parallel", "simple", "1 rank", "images_per_sec", b.get("images_per_sec"), "img/s",
          reference=a.get("images_per_sec"), note="reference: the same run without a group")
    c.say(f"one rank ({backend}): same weights {a.get('weights_sha256') == b.get('weights_sha256')}")


# Part 2 -------------------------------------------------------------------------------------------


def part_bench(c, variant, sets):
    out_dir = os.path.join(c.scratch, f"bench-{variant}")
    args = ["bench", "--compare", "--device", c.device, "--out", out_dir, "--python", sys.executable,
            "--reference-script", os.path.join(ROOT, "bench", "pytorch_reference.py")]
    for s in sets:
        args += ["--set", s]
    if c.args.tiny:
        args += ["--models", "simple", "--steps", "1", "--batch", "4", "--eval-batch", "4", "--eval-calls", "1"]
    c.ddpm(args)
    with open(os.path.join(out_dir, f"{c.slug}.csv")) as f:
        rows = list(csv.DictReader(f))
    shutil.copy(os.path.join(out_dir, f"{c.slug}.csv"), os.path.join(c.out, f"bench-{variant}.csv"))
    num = lambda v: float(v) if v not in ("", None) else None
    for r in rows:
        m = r["model"]
        note = f"batch {r['batch']}, {r['image_size']}x{r['image_size']}, {r['steps_measured']} steps measured"
        c.row("bench", m, variant, "train_images_per_sec", num(r["train_images_per_sec"]), "img/s",
              num(r["pytorch_train_images_per_sec"]), note)
        c.row("bench", m, variant, "sample_evals_per_sec", num(r["sample_evals_per_sec"]), "evals/s",
              num(r["pytorch_sample_evals_per_sec"]), "eval batch, no gradients, fp32")
        c.row("bench", m, variant, "fid_images_per_sec", num(r["fid_images_per_sec"]), "img/s",
              num(r["pytorch_fid_images_per_sec"]), "" if r["fid_images_per_sec"] else "skipped: no Inception weights here")
        c.row("bench", m, variant, "peak_device_mb", num(r["peak_device_mb"]), "MB", num(r["pytorch_peak_device_mb"]),
              "caching allocator's allocated-bytes peak while training")
        c.row("bench", m, variant, "peak_host_mb", num(r["peak_host_mb"]), "MB", num(r["pytorch_peak_host_mb"]))
        if c.util:
            busy, n = c.util.mean_over(float(r["window_start_unix"]), float(r["window_end_unix"]))
            c.row("bench", m, variant, "gpu_busy_percent", busy, "%", "",
                  f"nvidia-smi utilisation over ddpm's measured window ({n} samples)")


# Part 3 -------------------------------------------------------------------------------------------


def part_runs_per_device(c, k):
    tiny = c.args.tiny
    steps, batch = (4, 4) if tiny else (200, 128)
    exp = write(os.path.join(c.scratch, f"rpd_{k}.toml"),
                experiment_toml("gpu_check_rpd", "simple", tiny, steps, batch, log_every=steps // 4,
                                checkpoint_every=steps, seeds=[0, 1, 2, 3], limit=256 if tiny else 1024))
    results = os.path.join(c.scratch, f"rpd-{k}")
    _, seconds = c.ddpm(["run", exp, "--device", c.device, "--runs-per-device", str(k), "--results", results])
    dirs = run_dirs(results)
    if k == 1 and dirs:
        # How a run's process saw its device: CUDA_VISIBLE_DEVICES of its GPU alone, and its free memory.
        with open(os.path.join(dirs[0], "attempts.jsonl")) as f:
            attempt = json.loads(f.readline())
        free = attempt.get("device_memory_free_bytes")
        c.row("runs_per_device", "simple", "K=1", "run_process_device", attempt.get("device", "").replace(",", ";"),
              note=f"free device memory at the start: {free / 2**30:.1f} GiB" if free else "no device memory reported")
    steady = [steady_images_per_sec(d) for d in dirs]
    steady = [s for s in steady if s]
    images = len(dirs) * steps * batch
    c.row("runs_per_device", "simple", f"K={k}", "total_images_per_sec", images / seconds, "img/s",
          note=f"{len(dirs)} runs of {steps} steps of {batch}: all images over the wall time of `ddpm run` "
               f"({seconds:.1f} s, process starts and sampling included)")
    if steady:
        c.row("runs_per_device", "simple", f"K={k}", "steady_images_per_sec", k * sum(steady) / len(steady), "img/s",
              note=f"K x the runs' mean steady-state rate ({sum(steady) / len(steady):.1f} img/s each)")


# Part 4 -------------------------------------------------------------------------------------------


def part_notebook(c):
    tiny = c.args.tiny
    steps, batch = (4, 4) if tiny else (300, 128)
    notebook = os.path.join(ROOT, "experiments", "seed_notebook_mnist32.toml")
    # Tiny: the same recipe with narrow widths (a table with `name` replaces the included one whole).
    extra = '[model]\nname = "simple_bn"\n' + TINY_MODEL_KEYS["simple_bn"] + "\n" if tiny else ""
    # The included recipe has a `full` profile, which a CUDA run gets by default: this file's own
    # profile, given explicitly, keeps the check's length and one seed.
    extra += f"[profiles.check]\nexperiment.seeds = [0]\ntrain.steps = {steps}\ntrain.batch_size = {batch}\n"
    exp = write(os.path.join(c.scratch, "notebook.toml"),
                experiment_toml("gpu_check_notebook", "simple_bn", False, steps, batch, log_every=steps // 6 or 1,
                                checkpoint_every=steps, include=notebook, extra=extra))
    results = os.path.join(c.scratch, "notebook")
    _, seconds = c.ddpm(["run", exp, "--device", c.device, "--profile", "check", "--results", results])
    run = run_dirs(results)[0]
    status = read_json(os.path.join(run, "status.json"))
    rate = steady_images_per_sec(run)
    epochs = len(NOTEBOOK_EPOCH_SECONDS)
    images = epochs * NOTEBOOK_STEPS_PER_EPOCH * 128
    theirs = sum(NOTEBOOK_EPOCH_SECONDS)
    c.row("notebook", "simple_bn", "fp32", "parameters", status.get("parameters"))
    c.row("notebook", "simple_bn", "fp32", "steady_images_per_sec", rate, "img/s",
          images / theirs, f"batch {batch}, T = 200, Adam 1e-3; the notebook's log: {images / theirs:.0f} img/s")
    if rate:
        c.row("notebook", "simple_bn", "fp32", "projected_20_epoch_seconds", images / rate, "s", float(theirs),
              f"{epochs} epochs of {NOTEBOOK_STEPS_PER_EPOCH} batches of 128 at the steady rate; the notebook took "
              f"{theirs} s ({theirs / epochs:.1f} s per epoch)")


def part_profile_choice(c):
    """Item: a run on CUDA gets the recipe's `full` profile unless --profile says otherwise."""
    main_job = os.path.join(ROOT, "experiments", "cosine_vs_linear.toml")
    out, _ = c.ddpm(["run", main_job, "--device", c.device, "--dry-run", "--results", os.path.join(c.scratch, "plan")])
    line = next((l for l in out.splitlines() if l.startswith("profile:")), "")
    c.row("profile", "", "", "profile_line", line[:200].replace(",", ";"))
    chose_full = "`full`" in line
    c.row("profile", "", "", "cuda_gets_full", str(chose_full).lower(),
          note="`ddpm run experiments/cosine_vs_linear.toml --device <device> --dry-run`")


def part_eval_batch(c, batch):
    """What a sampling model call costs at an evaluation batch: the main job's model, no training
    beyond the bench's two short windows."""
    out_dir = os.path.join(c.scratch, f"eval-batch-{batch}")
    tiny = c.args.tiny
    args = ["bench", "--device", c.device, "--out", out_dir, "--models", "simple",
            "--steps", "1" if tiny else "2", "--eval-batch", str(batch), "--eval-calls", "1" if tiny else "40"]
    if tiny:
        args += ["--batch", "4"]
    c.ddpm(args)
    with open(os.path.join(out_dir, f"{c.slug}.csv")) as f:
        row = next(csv.DictReader(f))
    evals = float(row["sample_evals_per_sec"])
    c.row("eval_batch", "simple", f"B={batch}", "sample_evals_per_sec", evals, "evals/s",
          note=f"the blog model's forward without gradients at batch {batch} (one sampling step of {batch} images)")
    c.row("eval_batch", "simple", f"B={batch}", "ms_per_sampling_step", 1e3 * batch / evals, "ms",
          note=f"one reverse step of {batch} images")


def cmd_run(args):
    c = Check(args)
    failures = []

    def attempt(part, what, fn, *a):
        try:
            fn(c, *a)
        except Exception as e:  # a failed part is a row, and the others still run
            failures.append(f"{part} {what}")
            c.say(f"FAILED {part} {what}: {e}")
            c.row(part, what, "", "error", "", note=str(e)[-300:])

    # Most valuable first, each with the seconds it needs on a GPU (measured or estimated), so that the
    # budget cuts the least valuable: the bit-exact resume of every model under strict determinism,
    # the speed against PyTorch (fp32), what an evaluation step costs at the evaluation batch, the
    # profile a CUDA run gets, runs per device, the notebook recipe, then the other precisions.
    gpu = not args.tiny
    try:
        available = part_device(c)
        if c.slug == "cuda" and not available:
            c.say("libtorch sees no CUDA device: nothing else to measure")
            return 1
        if not c.skip("profile", "choice", 0):
            attempt("profile", "choice", part_profile_choice)
        models = registered_models(c)
        for m in models:
            if not c.skip("train", m, 20 if gpu else 0):
                attempt("train", m, part_train_resume, m)
        if not c.skip("parallel", "1 rank", 20 if gpu else 0):
            attempt("parallel", "1 rank", part_parallel)
        variants = dict(BENCH_VARIANTS)
        if not c.skip("bench", "fp32", 90 if gpu else 0):
            attempt("bench", "fp32", part_bench, "fp32", variants["fp32"])
        for b in (64, 500):
            if not c.skip("eval_batch", f"B={b}", 15 if gpu else 0):
                attempt("eval_batch", f"B={b}", part_eval_batch, b)
        for k in (1, 2, 4):
            if not c.skip("runs_per_device", f"K={k}", 30 if gpu else 0):
                attempt("runs_per_device", f"K={k}", part_runs_per_device, k)
        if not c.skip("notebook", "simple_bn", 40 if gpu else 0):
            attempt("notebook", "simple_bn", part_notebook)
        for name, sets in BENCH_VARIANTS[1:]:
            if not c.skip("bench", name, 90 if gpu else 0):
                attempt("bench", name, part_bench, name, sets)
    finally:
        c.close()
    if failures:
        print("gpu-check: failed parts: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stage", help="copy the binary and data into .gpu-check/ and print the device command")
    s.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ddpm"))
    s.add_argument("--dir", help="stage here instead of .gpu-check/ (tests)")
    s.add_argument("--dry-run", action="store_true", help="print what would be carried and its size only")
    s.add_argument("--carry-limit-mib", type=float, default=CARRY_LIMIT / 2**20,
                   help="the device tool's carry limit (64 MiB; smaller in tests)")
    d = sub.add_parser("dry-run", help="what `stage` would carry and its size; writes nothing")
    d.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ddpm"))
    d.add_argument("--carry-limit-mib", type=float, default=CARRY_LIMIT / 2**20)
    r = sub.add_parser("run", help="measure (on the device), writing <out>/<device>.csv and gpu-check.log")
    r.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    r.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    r.add_argument("--out", help="[default: $OUT, else target/gpu-check-out]")
    r.add_argument("--binary", help="[default: the staged one, else target/release/ddpm]")
    r.add_argument("--data", help="[default: the staged data, else $DDPM_DATA_DIR or data/]")
    r.add_argument("--stage", help="a staged folder to unpack and use [default: .gpu-check/ when staged]")
    r.add_argument("--only", type=lambda v: set(v.split(",")), default=None,
                   help="a rerun of some parts only: part names (train, bench, eval_batch, runs_per_device, notebook, "
                        "profile) or variants (fp32, tf32, bf16, channels_last), comma-separated")
    r.add_argument("--budget-seconds", type=float, default=BUDGET_SECONDS,
                   help="parts that would not fit in this many seconds are skipped, and say so")
    col = sub.add_parser("collect", help="copy cuda.csv and gpu-check.log from DIR into analysis/bench/")
    col.add_argument("dir")
    args = p.parse_args()
    if args.command == "dry-run":
        args.dry_run, args.dir = True, None
        return cmd_stage(args)
    return {"stage": cmd_stage, "run": cmd_run, "collect": cmd_collect}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
