"""The reference packages run as the oracle for tests/formulations.rs: k-diffusion 0.1.1.post1 (EDM),
Meta's flow_matching 1.0.10 (its affine path and ODE solver) and diffusers 0.42.1 (its flow-matching
Euler and Heun schedulers), on the fixed analytic networks that tests/formulations.rs computes too.

Usage: oracle.py INPUTS.safetensors OUT.safetensors

k_diffusion's package __init__ imports its training stack (wandb, clean-fid, kornia, ...); its
`sampling`, `layers` and `utils` modules are imported here as they are, under the package name, without
running that __init__ (their own imports are installed by the justfile).

INPUTS: "edm.x0", "edm.noise", "edm.sigma" (the loss and denoiser at given sigma), "edm.x_T" (the
samplers' start, N(0, I): scaled by sigma_0 here as by ours), "flow.x0", "flow.noise", "flow.tau"
(the path), "flow.x_T". OUT: the oracle's values under the same names as tests/formulations.rs reads.
"""
import importlib
import importlib.util
import sys
import types

import torch
from safetensors.torch import load_file, save_file

torch.set_num_threads(2)


def k_diffusion():
    spec = importlib.util.find_spec("k_diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.layers")


def edm_inner(x, sigma):
    """F(x_in, sigma) with c = ln(sigma)/4: x (0.9 - 0.2 tanh c) + 0.1 sin(3 x) c (float64 inside)."""
    c = (torch.log(sigma.to(torch.float64)) / 4.0).reshape(-1, 1, 1, 1)
    x = x.to(torch.float64)
    return (x * (0.9 - 0.2 * torch.tanh(c)) + 0.1 * torch.sin(3.0 * x) * c).to(torch.float32)


def flow_velocity(x, t):
    """v(x, t) = x (1 - 0.5 t) - 0.3 tanh(x) + 0.2 t (float64 inside); t a scalar or 0-d tensor."""
    t = float(t)
    x64 = x.to(torch.float64)
    return (x64 * (1.0 - 0.5 * t) - 0.3 * torch.tanh(x64) + 0.2 * t).to(torch.float32)


def main():
    inputs = load_file(sys.argv[1])
    out = {}
    sampling, layers = k_diffusion()

    # EDM: Table 1's scalings, the denoiser and the loss of k-diffusion's Denoiser (sigma_data = 0.5).
    den = layers.Denoiser(edm_inner, sigma_data=0.5)
    sigma = inputs["edm.sigma"]
    c_skip, c_out, c_in = den.get_scalings(sigma)
    out["edm.c_skip"], out["edm.c_out"], out["edm.c_in"] = c_skip, c_out, c_in
    x0, noise = inputs["edm.x0"], inputs["edm.noise"]
    out["edm.loss"] = den.loss(x0, noise, sigma)
    noised = x0 + noise * sigma.reshape(-1, 1, 1, 1)
    out["edm.denoised"] = den(noised, sigma)

    # EDM's sigmas and samplers: Euler, Heun (Algorithm 1) and Heun with churn (Algorithm 2).
    for n in (1, 2, 10):
        out[f"edm.sigmas.{n}"] = sampling.get_sigmas_karras(n, 0.002, 80.0, rho=7.0)
    x_T = inputs["edm.x_T"]
    cases = {
        "euler": (sampling.sample_euler, {}),
        "heun": (sampling.sample_heun, {}),
        "heun_churn": (sampling.sample_heun, dict(s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)),
    }
    for name, (fn, kw) in cases.items():
        for n in (1, 2, 8):
            sig = sampling.get_sigmas_karras(n, 0.002, 80.0, rho=7.0)
            torch.manual_seed(5)
            out[f"edm.{name}.{n}"] = fn(den, x_T * sig[0], sig, disable=True, **kw)

    # Flow matching: the conditional OT path (x_0 noise, x_1 data, t = 1 - tau in its convention).
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.solver import ODESolver

    fx0, fnoise, tau = inputs["flow.x0"], inputs["flow.noise"], inputs["flow.tau"]
    sample = AffineProbPath(CondOTScheduler()).sample(x_0=fnoise, x_1=fx0, t=1.0 - tau)
    out["flow.x_t"], out["flow.dx_t"] = sample.x_t, sample.dx_t

    # diffusers' grid and steps (shift 3, 10 steps; 1 step), and flow_matching's ODE solver on that grid.
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    fx_T = inputs["flow.x_T"]
    for n in (1, 10):
        euler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
        euler.set_timesteps(n)
        out[f"flow.sigmas.{n}"] = euler.sigmas
        x, states = fx_T.clone(), []
        for t in euler.timesteps:
            x = euler.step(flow_velocity(x, t / 1000.0), t, x).prev_sample
            states.append(x)
        out[f"flow.diffusers_euler.{n}"] = torch.stack(states)
        heun = FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
        heun.set_timesteps(n)
        x = fx_T.clone()
        for t in heun.timesteps:
            x = heun.step(flow_velocity(x, t / 1000.0), t, x).prev_sample
        out[f"flow.diffusers_heun.{n}"] = x
        grid = euler.sigmas
        for method in ("euler", "midpoint"):
            solver = ODESolver(velocity_model=lambda x, t: flow_velocity(x, t))
            sol = solver.sample(x_init=fx_T.clone(), step_size=None, method=method, time_grid=grid,
                                return_intermediates=True)
            out[f"flow.ode_{method}.{n}"] = sol[1:]
    save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])


if __name__ == "__main__":
    main()
