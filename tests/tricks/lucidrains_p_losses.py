"""lucidrains' GaussianDiffusion.p_losses (denoising-diffusion-pytorch 2.3.4) as the oracle for
tests/tricks.rs: the network's inputs and the regression target with offset noise and
self-conditioning, on given x_0, t and noise.

Usage: lucidrains_p_losses.py CASES.json INPUTS.safetensors OUT.safetensors

Each case {"name", "objective" (pred_noise | pred_v), "offset" (strength), "self_condition" (bool),
"coin" (the value p_losses' `random()` returns: below 0.5 runs the first pass)} reads "<name>.x0",
"<name>.t", "<name>.noise" and "<name>.offset" (the [B, C] normals that p_losses' torch.randn draws
for offset noise, handed to it by replacing that one draw). The network is a recorder: it stores
each call's input as the Unet would see it, cat(x_self_cond or zeros, x) with self-conditioning
(lucidrains' order) and x without, and returns 0.5 tanh(x) + 0.1 x_self_cond (the same function
tests/tricks.rs uses). The target is what p_losses hands F.mse_loss.

OUT: "<name>.input.<k>" for the k-th network call, "<name>.target".
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import denoising_diffusion_pytorch.denoising_diffusion_pytorch as ddp

torch.set_num_threads(2)


class Recorder(nn.Module):
    def __init__(self, channels, self_condition):
        super().__init__()
        self.channels = channels
        self.out_dim = channels
        self.self_condition = self_condition
        self.random_or_learned_sinusoidal_cond = False
        self.calls = []
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, x_self_cond=None):
        if self.self_condition:
            cond = x_self_cond if x_self_cond is not None else torch.zeros_like(x)
            self.calls.append(torch.cat((cond, x), dim=1).detach().clone())
            return 0.5 * torch.tanh(x) + 0.1 * cond
        self.calls.append(x.detach().clone())
        return 0.5 * torch.tanh(x)


def main():
    cases = json.load(open(sys.argv[1]))
    inputs = load_file(sys.argv[2])
    out = {}
    mse = F.mse_loss
    randn = torch.randn
    for case in cases:
        n = case["name"]
        x0, t, noise = inputs[f"{n}.x0"], inputs[f"{n}.t"], inputs[f"{n}.noise"]
        b, c, h, w = x0.shape
        net = Recorder(c, case["self_condition"])
        diffusion = ddp.GaussianDiffusion(
            net,
            image_size=h,
            timesteps=1000,
            objective=case["objective"],
            beta_schedule="linear",
            offset_noise_strength=case["offset"],
        )
        ddp.random = lambda: case["coin"]
        offset = inputs[f"{n}.offset"]
        ddp.torch.randn = lambda *shape, **kw: offset.clone() if tuple(shape[0]) == (b, c) else randn(*shape, **kw)
        targets = []

        def recording_mse(pred, target, **kw):
            targets.append(target.detach().clone())
            return mse(pred, target, **kw)

        ddp.F.mse_loss = recording_mse
        try:
            diffusion.p_losses(x0, t, noise=noise.clone())
        finally:
            ddp.F.mse_loss = mse
            ddp.torch.randn = randn
        for k, call in enumerate(net.calls):
            out[f"{n}.input.{k}"] = call.contiguous()
        out[f"{n}.target"] = targets[0].contiguous()
    save_file(out, sys.argv[3])


if __name__ == "__main__":
    main()
