"""diffusers 0.42.1's schedulers run as the oracle for tests/samplers.rs.

Usage: diffusers_oracle.py CASES.json INPUTS.safetensors OUT.safetensors

CASES.json is a list of {"name", "sampler", "steps", "target", "seed"}; INPUTS holds, per case,
"<name>.betas" (float64, our β), "<name>.x_T" (the starting noise). The schedule is the same one on
both sides: the scheduler is built with `trained_betas` and its `alphas_cumprod` replaced by the
float64 cumulative product of the same β (diffusers computes it in float32), so that the comparison
is of the samplers, not of float32 rounding. With zero terminal SNR the schedulers' own 2**-24
clamp of ᾱ_T is applied after that, as their __init__ does. The "model" is the fixed analytic
function of (model input, timestep) that tests/samplers.rs computes too. Stochastic samplers draw
their noise from torch's global generator after torch.manual_seed(seed), as ours does from
libtorch's (the same library): the analytic model draws nothing.

OUT holds "<name>.states": the state after each step, divided by sqrt(sigma_next^2 + 1) for the
sigma-based schedulers (the variance-preserving x_t the model sees; the sample itself at the end).

Also: "arrays.<schedule>.*" for T = 1000 linear and cosine: DDPMScheduler's learned_range log-variance
for a fixed v at every t, its fixed_small variance (the posterior variance), the posterior mean
coefficients of its step, and rescale_zero_terminal_snr of our β in float64.
"""
import json
import sys

import torch
from diffusers import (
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from safetensors.torch import load_file, save_file

torch.set_num_threads(2)
PREDICTION = {"eps": "epsilon", "v": "v_prediction"}


def model(x, t):
    """The analytic model: x (1 - 0.3 g) + 0.05 g tanh(x), g = (1 - t/999)^2 (in float64, as ours)."""
    g = (1.0 - float(t) / 999.0) ** 2
    x = x.to(torch.float64)
    return (x * (1.0 - 0.3 * g) + 0.05 * g * torch.tanh(x)).to(torch.float32)


def scheduler(case, betas):
    kwargs = dict(
        num_train_timesteps=len(betas),
        trained_betas=betas.tolist(),
        prediction_type=PREDICTION[case["target"]],
    )
    name = case["sampler"]
    if name == "dpm_solver":
        s = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **kwargs)
    elif name == "euler":
        s = EulerDiscreteScheduler(use_karras_sigmas=case.get("karras", True), **kwargs)
    elif name == "heun":
        s = HeunDiscreteScheduler(use_karras_sigmas=case.get("karras", True), **kwargs)
    elif name == "euler_ancestral":
        s = EulerAncestralDiscreteScheduler(**kwargs)
    else:
        raise ValueError(name)
    ab = torch.cumprod(1.0 - betas, 0)
    if ab[-1] == 0:
        ab[-1] = 2.0**-24
    s.alphas_cumprod = ab
    return s


def sigma_table(s, case, betas):
    """The scheduler's sigmas recomputed in float64 by its own set_timesteps code path."""
    import numpy as np

    sigmas = np.array(((1 - s.alphas_cumprod) / s.alphas_cumprod) ** 0.5)
    n = case["steps"]
    timesteps = np.linspace(0, len(betas) - 1, n, dtype=np.float32)[::-1].copy()
    sig = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
    if case["sampler"] in ("euler", "heun") and case.get("karras", True):
        sig = s._convert_to_karras(in_sigmas=sig, num_inference_steps=n)
    sig = np.concatenate([sig, [0.0]])
    if case["sampler"] == "heun":
        sig = np.concatenate([sig[:1], np.repeat(sig[1:-1], 2), sig[-1:]])
    assert np.allclose(sig, s.sigmas.numpy(), rtol=1e-6), "the float64 table is the scheduler's own"
    return sig


def run(case, betas, x_T):
    s = scheduler(case, betas)
    s.set_timesteps(case["steps"])
    if case["sampler"] != "dpm_solver":
        # The sigma table in float64 as ours (diffusers casts it to float32): at the cosine schedule's
        # sigma_T = 2e4, Euler ancestral's float32 sigma_down = sqrt(sigma_to^2 - sigma_up^2) cancels to 0
        # where it is 0.0016, which moves the state by 1e-3. The states stay float32 on both sides.
        s.sigmas = torch.from_numpy(sigma_table(s, case, betas))
    torch.manual_seed(case["seed"])
    sigma_based = case["sampler"] != "dpm_solver"
    x = (x_T * s.init_noise_sigma).to(torch.float32)
    states = []
    timesteps = list(s.timesteps)
    for i, t in enumerate(timesteps):
        inp = s.scale_model_input(x, t)
        out = model(inp, t)
        x = s.step(out, t, x).prev_sample
        if case["sampler"] == "heun" and s.dt is not None and i + 1 < len(timesteps):
            continue  # Heun's predictor: the state is the corrected one, after the next call
        if sigma_based:
            sigma_next = s.sigmas[s.step_index]
            states.append(x / (sigma_next**2 + 1) ** 0.5)
        else:
            states.append(x.clone())
    return torch.stack(states)


def arrays(name, betas, out):
    s = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(), variance_type="learned_range")
    s.betas = betas.clone()
    s.alphas = 1.0 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    s.one = torch.tensor(1.0, dtype=torch.float64)
    s.num_inference_steps = None
    T = len(betas)
    v = torch.linspace(-1.0, 1.0, T, dtype=torch.float64)
    learned, posterior, coef1, coef2 = [], [], [], []
    for t in range(T):
        learned.append(s._get_variance(t, predicted_variance=v[t]))
        posterior.append(s._get_variance(t, variance_type="fixed_small"))
        ab = s.alphas_cumprod[t]
        ab_prev = s.alphas_cumprod[t - 1] if t > 0 else s.one
        beta_t = 1 - ab / ab_prev
        # DDPMScheduler.step's pred_original_sample_coeff and current_sample_coeff.
        coef1.append(ab_prev**0.5 * beta_t / (1 - ab))
        coef2.append((1 - beta_t) ** 0.5 * (1 - ab_prev) / (1 - ab))
    out[f"arrays.{name}.learned_log_variance"] = torch.stack(learned).reshape(-1)
    out[f"arrays.{name}.v"] = v
    out[f"arrays.{name}.posterior_variance"] = torch.stack(posterior).reshape(-1)
    out[f"arrays.{name}.coef1"] = torch.stack(coef1).reshape(-1)
    out[f"arrays.{name}.coef2"] = torch.stack(coef2).reshape(-1)
    out[f"arrays.{name}.zero_snr_betas"] = rescale_zero_terminal_snr(betas.clone())
    # diffusers' own construction of the named schedule (float32), against our β.
    own = {"linear": DDPMScheduler(beta_schedule="linear"), "cosine": DDPMScheduler(beta_schedule="squaredcos_cap_v2")}
    out[f"arrays.{name}.diffusers_betas"] = own[name].betas.to(torch.float64)


def main():
    cases = json.load(open(sys.argv[1]))
    inputs = load_file(sys.argv[2])
    out = {}
    for case in cases:
        n = case["name"]
        out[f"{n}.states"] = run(case, inputs[f"{n}.betas"], inputs[f"{n}.x_T"]).contiguous()
    for name in ["linear", "cosine"]:
        if f"arrays.{name}.betas" in inputs:
            arrays(name, inputs[f"arrays.{name}.betas"], out)
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[3])


if __name__ == "__main__":
    main()
