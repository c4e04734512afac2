"""PyTorch eager reference for `ddpm bench --compare`.

The same four networks as src/models (same layers, widths and forward passes; PyTorch's own
initialisation, which does not change the arithmetic), the same training step as src/train (a batch
drawn by index from one device-resident tensor, t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps, L2 on eps, Adam, an EMA of the weights by lerp, the loss summed on the device and
read back only at the end of the window), and the same sampling and Inception measurements. It prints
one JSON object per model on standard output.

The execution options mirror ddpm's training keys, which `ddpm bench` passes on: `--bf16`
(`train.precision = "bf16"`: the forward pass under bfloat16 autocast, its output and the loss in
float32), `--tf32` (`train.tf32`: TF32 float32 matmuls), `--channels-last` (`train.channels_last`:
weights and inputs in NHWC order) and `--deterministic` (`train.deterministic`: deterministic
algorithms, strictly as ddpm sets them (an operation without a deterministic kernel fails), deterministic cuDNN, no autotuning, cuBLAS's fixed workspace); without it,
cuDNN autotuning is on, as ddpm switches it on for non-deterministic runs.

    .venv/bin/python bench/pytorch_reference.py --model simple --batch 128 --size 32 --warmup 5 --steps 20
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal(t, dim):
    half = dim // 2
    scale = -math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * scale)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], 1)


# --- `simple`: the blog recipe's SimpleUNet (src/models/simple_unet.rs; seed 000's code itself is in
# tests/seeds/seed_models.py, and tests/seeds.rs checks ours against it) ---
class SimpleBlock(nn.Module):
    def __init__(self, c_in, c_out, time_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, c_out)
        self.time = nn.Linear(time_dim, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, c_out)

    def forward(self, x, temb):
        h = self.norm1(F.relu(self.conv1(x)))
        h = h + self.time(F.relu(temb))[:, :, None, None]
        return self.norm2(F.relu(self.conv2(h)))


class SimpleUNet(nn.Module):
    def __init__(self, channels, time_dim=32):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Linear(time_dim, time_dim)
        self.down = nn.ModuleList([SimpleBlock(channels, 32, time_dim), SimpleBlock(32, 64, time_dim),
                                   SimpleBlock(64, 128, time_dim)])
        self.mid = SimpleBlock(128, 128, time_dim)
        self.up = nn.ModuleList([SimpleBlock(256, 64, time_dim), SimpleBlock(128, 32, time_dim),
                                 SimpleBlock(64, 32, time_dim)])
        self.out = nn.Conv2d(32, channels, 1)

    def forward(self, x, t):
        temb = F.relu(self.time_mlp(sinusoidal(t, self.time_dim)))
        skips, h = [], x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2), temb)
            skips.append(h)
        h = self.mid(F.max_pool2d(h, 2), temb)
        for block in self.up:
            up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            h = block(torch.cat([up, skips.pop()], 1), temb)
        return self.out(h)


# --- `simple_bn`: the notebook recipe's BatchNorm U-Net (src/models/simple_bn.rs) ---
class BnBlock(nn.Module):
    def __init__(self, c_in, c_out, time_dim, up):
        super().__init__()
        self.time_mlp = nn.Linear(time_dim, c_out)
        if up:
            self.conv1 = nn.Conv2d(2 * c_in, c_out, 3, padding=1)
            self.transform = nn.ConvTranspose2d(c_out, c_out, 4, 2, 1)
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.transform = nn.Conv2d(c_out, c_out, 4, 2, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bnorm1 = nn.BatchNorm2d(c_out)
        self.bnorm2 = nn.BatchNorm2d(c_out)

    def forward(self, x, temb):
        h = self.bnorm1(F.relu(self.conv1(x)))
        h = h + F.relu(self.time_mlp(temb))[:, :, None, None]
        h = self.bnorm2(F.relu(self.conv2(h)))
        return self.transform(h)


class SimpleBnUnet(nn.Module):
    def __init__(self, channels, time_dim=32, widths=(64, 128, 256, 512, 1024)):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Linear(time_dim, time_dim)
        self.conv0 = nn.Conv2d(channels, widths[0], 3, padding=1)
        up_widths = widths[::-1]
        self.downs = nn.ModuleList([BnBlock(widths[i], widths[i + 1], time_dim, False) for i in range(len(widths) - 1)])
        self.ups = nn.ModuleList([BnBlock(up_widths[i], up_widths[i + 1], time_dim, True) for i in range(len(widths) - 1)])
        self.output = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x, t):
        temb = F.relu(self.time_mlp(sinusoidal(t, self.time_dim)))
        h = self.conv0(x)
        skips = []
        for down in self.downs:
            h = down(h, temb)
            skips.append(h)
        for up in self.ups:
            h = up(torch.cat([h, skips.pop()], 1), temb)
        return self.output(h)


# --- `unet`: the practical work's / lucidrains' U-Net (src/models/unet.rs, attention.rs) ---
class ResnetBlock(nn.Module):
    def __init__(self, c_in, c_out, time_dim, groups=8, dropout=0.0):
        super().__init__()
        self.mlp = nn.Linear(time_dim, 2 * c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.res_conv = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.dropout = dropout

    def forward(self, x, temb):
        scale, shift = self.mlp(F.silu(temb))[:, :, None, None].chunk(2, 1)
        h = self.norm1(self.conv1(x))
        h = F.dropout(F.silu(h * (scale + 1) + shift), self.dropout, self.training)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + (x if self.res_conv is None else self.res_conv(x))


class Attention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w).transpose(-1, -2) for t in self.to_qkv(x).chunk(3, 1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


class LinearAttention(nn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads = heads
        self.scale = dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)
        self.norm = nn.GroupNorm(1, dim)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, 1))
        q = q.softmax(-2) * self.scale
        k = k.softmax(-1)
        context = k @ v.transpose(-1, -2)
        out = context.transpose(-1, -2) @ q
        return self.norm(self.to_out(out.reshape(b, -1, h, w)))


class PreNormResidual(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.GroupNorm(1, dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x)) + x


class Unet(nn.Module):
    def __init__(self, channels, dim=64, dim_mults=(1, 2, 4)):
        super().__init__()
        time_dim = 4 * dim
        self.dim = dim
        self.time_mlp1 = nn.Linear(dim, time_dim)
        self.time_mlp2 = nn.Linear(time_dim, time_dim)
        self.init_conv = nn.Conv2d(channels, dim, 7, padding=3)
        dims = [dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        n = len(in_out)
        self.down = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i + 1 == n
            self.down.append(nn.ModuleList([
                ResnetBlock(d_in, d_in, time_dim), ResnetBlock(d_in, d_in, time_dim),
                PreNormResidual(d_in, LinearAttention(d_in)),
                nn.Conv2d(4 * d_in, d_out, 1) if not last else nn.Conv2d(d_in, d_out, 3, padding=1)]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, time_dim)
        self.mid_attn = PreNormResidual(mid, Attention(mid))
        self.mid_block2 = ResnetBlock(mid, mid, time_dim)
        self.up = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            self.up.append(nn.ModuleList([
                ResnetBlock(d_out + d_in, d_out, time_dim), ResnetBlock(d_out + d_in, d_out, time_dim),
                PreNormResidual(d_out, LinearAttention(d_out)), nn.Conv2d(d_out, d_in, 3, padding=1)]))
        self.n = n
        self.final_block = ResnetBlock(2 * dim, dim, time_dim)
        self.final_conv = nn.Conv2d(dim, channels, 1)

    def forward(self, x, t):
        temb = self.time_mlp2(F.gelu(self.time_mlp1(sinusoidal(t, self.dim))))
        h = self.init_conv(x)
        r = h
        skips = []
        for i, (b1, b2, attn, resample) in enumerate(self.down):
            h = b1(h, temb)
            skips.append(h)
            h = attn(b2(h, temb))
            skips.append(h)
            h = resample(F.pixel_unshuffle(h, 2)) if i + 1 < self.n else resample(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)
        for i, (b1, b2, attn, resample) in enumerate(self.up):
            h = b1(torch.cat([h, skips.pop()], 1), temb)
            h = b2(torch.cat([h, skips.pop()], 1), temb)
            h = attn(h)
            h = resample(F.interpolate(h, scale_factor=2, mode="nearest")) if i + 1 < self.n else resample(h)
        return self.final_conv(self.final_block(torch.cat([h, r], 1), temb))


# --- `ddpm_cifar`: Ho et al. 2020, Appendix B (src/models/ddpm_cifar.rs) ---
class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, temb, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb, c_out)
        self.norm2 = nn.GroupNorm(32, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.dropout = dropout

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.dropout(F.silu(self.norm2(h)), self.dropout, self.training))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(32, c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        seq = lambda conv: conv(n).reshape(b, 1, c, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(seq(self.q), seq(self.k), seq(self.v))
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class DdpmCifar(nn.Module):
    def __init__(self, channels, image_size, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_res=(16,),
                 dropout=0.1):
        super().__init__()
        self.ch = ch
        temb = 4 * ch
        self.dense0, self.dense1 = nn.Linear(ch, temb), nn.Linear(temb, temb)
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
        skips, c = [ch], ch
        self.down = nn.ModuleList()
        n = len(ch_mult)
        for level, m in enumerate(ch_mult):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(c, ch * m, temb, dropout))
                c = ch * m
                attns.append(AttnBlock(c) if (image_size >> level) in attn_res else nn.Identity())
                skips.append(c)
            resample = nn.Conv2d(c, c, 3, stride=2) if level + 1 < n else None
            if resample is not None:
                skips.append(c)
            self.down.append(nn.ModuleList([blocks, attns, resample or nn.Identity()]))
        self.mid_block_1, self.mid_attn_1, self.mid_block_2 = (
            ResBlock(c, c, temb, dropout), AttnBlock(c), ResBlock(c, c, temb, dropout))
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(ch_mult))):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), ch * m, temb, dropout))
                c = ch * m
                attns.append(AttnBlock(c) if (image_size >> level) in attn_res else nn.Identity())
            self.up.append(nn.ModuleList([blocks, attns, nn.Conv2d(c, c, 3, padding=1) if level > 0 else nn.Identity()]))
        self.n = n
        self.norm_out = nn.GroupNorm(32, c)
        self.conv_out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, x, t):
        temb = self.dense1(F.silu(self.dense0(sinusoidal(t, self.ch))))
        hs = [self.conv_in(x)]
        for level, (blocks, attns, resample) in enumerate(self.down):
            for block, attn in zip(blocks, attns):
                hs.append(attn(block(hs[-1], temb)))
            if level + 1 < self.n:
                hs.append(resample(F.pad(hs[-1], (0, 1, 0, 1))))
        h = self.mid_block_2(self.mid_attn_1(self.mid_block_1(hs[-1], temb)), temb)
        for i, (blocks, attns, resample) in enumerate(self.up):
            for block, attn in zip(blocks, attns):
                h = attn(block(torch.cat([h, hs.pop()], 1), temb))
            if i + 1 < self.n:
                h = resample(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def build(name, channels, size):
    if name == "simple":
        return SimpleUNet(channels)
    if name == "simple_bn":
        return SimpleBnUnet(channels)
    if name == "unet":
        return Unet(channels)
    if name == "ddpm_cifar":
        return DdpmCifar(channels, size)
    raise SystemExit(f"unknown model {name!r}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_bytes():
    """VmHWM of this process (reset per model by writing 5 to /proc/self/clear_refs)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def bench(args, device):
    torch.manual_seed(0)
    reset_peak()
    if device.type == "cuda":
        # CUDA initialises lazily; resetting its statistics before then fails ("Invalid device argument").
        torch.cuda.init()
        torch.zeros(1, device=device)
        torch.cuda.reset_peak_memory_stats(device)
    c, s, b = args.channels, args.size, args.batch
    # The dataset as one device tensor; batches are index draws from an epoch's permutation.
    data = torch.rand(args.images, c, s, s, device=device) * 2 - 1
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    sqrt_ab = abar.sqrt().float().to(device)
    sqrt_1m_ab = (1 - abar).sqrt().float().to(device)
    model = build(args.model, c, s).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=2e-4)
    model.train()
    perm = torch.randperm(args.images, device=device)
    pos = 0

    def step():
        nonlocal perm, pos
        if pos + b > args.images:
            perm, pos = torch.randperm(args.images, device=device), 0
        idx = perm[pos:pos + b]
        pos += b
        x0 = data.index_select(0, idx)
        t = torch.randint(0, T, (b,), device=device)
        noise = torch.randn_like(x0)
        x_t = sqrt_ab[t].view(-1, 1, 1, 1) * x0 + sqrt_1m_ab[t].view(-1, 1, 1, 1) * noise
        if args.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(x_t, t)
        loss = F.mse_loss(out.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - 0.9999)
        return loss.detach()

    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    total = torch.zeros((), device=device)
    for _ in range(args.steps):
        total += step()
    total.item()
    train_seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        x = torch.randn(args.eval_batch, c, s, s, device=device)
        tt = torch.full((args.eval_batch,), 500, device=device, dtype=torch.long)
        model(x, tt)
        sync(device)
        start = time.perf_counter()
        for _ in range(args.sample_calls):
            x = model(x, tt)
        sync(device)
        sample_seconds = time.perf_counter() - start

    fid = None
    if args.inception and os.path.exists(args.inception):
        net = torch.jit.load(args.inception, map_location=device).eval()
        with torch.no_grad():
            pixels = torch.randint(0, 256, (args.eval_batch, c, s, s), device=device).float()

            def features():
                x = pixels.repeat(1, 3, 1, 1) if c == 1 else pixels
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                return net(x / 128.0 - 1.0)

            features()
            sync(device)
            start = time.perf_counter()
            for _ in range(args.fid_batches):
                features()
            sync(device)
            fid = args.fid_batches * args.eval_batch / (time.perf_counter() - start)
    return {
        "model": args.model,
        "batch": b,
        "size": s,
        "parameters": sum(p.numel() for p in params),
        "train_images_per_sec": args.steps * b / train_seconds,
        "sample_evals_per_sec": args.sample_calls * args.eval_batch / sample_seconds,
        "fid_images_per_sec": fid,
        "peak_host_bytes": peak_rss_bytes(),
        "peak_device_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "options": {"bf16": args.bf16, "tf32": args.tf32, "channels_last": args.channels_last,
                    "deterministic": args.deterministic},
        "threads": torch.get_num_threads(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--sample-calls", type=int, default=5)
    p.add_argument("--fid-batches", type=int, default=2)
    p.add_argument("--inception", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="forward pass under bfloat16 autocast")
    p.add_argument("--tf32", action="store_true", help="TF32 float32 matmuls")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms, no autotuning")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.deterministic:
        # Before the first cuBLAS call, as ddpm sets it.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    print(json.dumps(bench(args, device)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
