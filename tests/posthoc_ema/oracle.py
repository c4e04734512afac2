"""ema-pytorch 0.8.3's PostHocEMA run as the oracle for tests/posthoc_ema.rs.

Usage: oracle.py TRAJECTORY.safetensors OUT.safetensors

TRAJECTORY holds "theta" [steps, 3, 4]: the weight of a bias-free Linear(4, 3) after each training
step. PostHocEMA (sigma_rels 0.05 and 0.10, update_every 1, a snapshot every 10 updates in float32, in a
fresh folder) is updated once per step with that weight; OUT holds the two tracked averages after the
last step ("tracked.0", "tracked.1") and the averages it synthesizes at the last step for sigma_rel
0.05, 0.075 and 0.15 ("synth.<sigma_rel>").
"""
import sys
import tempfile

import torch
from ema_pytorch import PostHocEMA
from safetensors.torch import load_file, save_file

torch.set_num_threads(2)


def main():
    theta = load_file(sys.argv[1])["theta"]
    net = torch.nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(theta[0])
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        ph = PostHocEMA(net, sigma_rels=(0.05, 0.10), update_every=1, checkpoint_every_num_steps=10,
                        checkpoint_folder=folder, checkpoint_dtype=torch.float32)
        for k in range(theta.shape[0]):
            with torch.no_grad():
                net.weight.copy_(theta[k])
            ph.update()
        for j in range(2):
            out[f"tracked.{j}"] = ph.ema_models[j].ema_model.weight.detach().clone()
        for sigma_rel in (0.05, 0.075, 0.15):
            synth = ph.synthesize_ema_model(sigma_rel=sigma_rel)
            out[f"synth.{sigma_rel}"] = synth.ema_model.weight.detach().clone()
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])


if __name__ == "__main__":
    main()
