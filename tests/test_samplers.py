"""The samplers: Algorithm 2 unchanged, parity of every loop with diffusers, and bad input.

The network is a fixed analytic one: the exact eps of a mixture of Gaussians (nonlinear in x_t and
different at every step, so a wrong coefficient, step or order changes the result), in float64.
"""

import importlib.util
import re
from fractions import Fraction

import pytest
import torch

import ddpm_tutor as dt
from ddpm_tutor.reverse import p_sample_step
from ddpm_tutor.samplers import SAMPLER_FUNCTIONS, trailing_timesteps

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
needs_diffusers = pytest.mark.skipif(
    not HAS_DIFFUSERS, reason="diffusers is not installed (pip install -e '.[test]'); the parity tests need it"
)

T = 100
SHAPE = (6, 1, 2, 2)


def _schedule():
    # betas rounded to float32 first, so that diffusers (which stores float32 betas) sees the same values
    return dt.schedule_from_betas(torch.linspace(1e-3, 0.05, T).float().double())


def _mixture_eps(schedule, means, s0=0.3):
    """eps*(x_t, t) = (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar) for data = mixture of N(mean_k, s0^2 I)."""
    means = means.double()

    def model(xt, t):
        ab = schedule.alpha_bars.to(xt)[t].view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
        x = xt.unsqueeze(1)  # (B, 1, C, H, W)
        mu = means.unsqueeze(0)  # (1, K, C, H, W)
        var = ab * s0**2 + 1 - ab  # variance of x_t given the component
        logw = -((x - ab.sqrt() * mu) ** 2).sum(dim=(2, 3, 4), keepdim=True) / (2 * var)
        w = torch.softmax(logw, dim=1)  # (B, K, 1, 1, 1) posterior weights of the components
        x0_mean = (w * (mu + ab.sqrt() * s0**2 / var * (x - ab.sqrt() * mu))).sum(dim=1)
        ab = ab.squeeze(1)
        return (xt - ab.sqrt() * x0_mean) / (1 - ab).sqrt()

    return model


MEANS = torch.tensor([[0.8, -0.6, 0.2, 0.5], [-0.7, 0.4, -0.9, 0.1], [0.1, 0.9, 0.6, -0.8]]).view(3, 1, 2, 2)


@pytest.fixture
def setup():
    schedule = _schedule()
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return schedule, _mixture_eps(schedule, MEANS), x_T


def _run(name, setup, steps, seed=1, **options):
    schedule, model, x_T = setup
    return SAMPLER_FUNCTIONS[name](model, schedule, x_T.clone(), trailing_timesteps(T, steps),
                                   generator=torch.Generator().manual_seed(seed), progress=False, **options)


# ---------------------------------------------------------------- time steps


def test_trailing_timesteps_start_at_T_and_keep_every_step_at_steps_T():
    assert trailing_timesteps(400, 400).tolist() == list(range(399, -1, -1))
    assert trailing_timesteps(400, 4).tolist() == [399, 299, 199, 99]
    assert trailing_timesteps(400, 1).tolist() == [399]
    assert trailing_timesteps(10, 4).tolist() == [9, 7, 4, 1]  # 10, 7.5, 5, 2.5 rounded half to even (8, 2), minus 1


@needs_diffusers
def test_trailing_timesteps_match_diffusers_where_diffusers_returns_the_count_asked():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=400, timestep_spacing="trailing")
    checked = 0
    for steps in range(1, 401):
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) != steps:  # its floating-point arange sometimes gives steps + 1
            continue
        for i, (theirs, ours) in enumerate(zip(scheduler.timesteps.tolist(), trailing_timesteps(400, steps).tolist())):
            exact = Fraction(400 * (steps - i), steps)
            # at an exact tie (x.5) diffusers' float arange may land just below or above it; elsewhere: equal
            assert abs(theirs - ours) <= (1 if exact.denominator == 2 else 0), (steps, i)
        checked += 1
    assert checked > 300


# ---------------------------------------------------------------- Algorithm 2 unchanged


class _TinyNet(torch.nn.Module):
    """A small nonlinear eps_theta(x_t, t) with weights, a train/eval mode and a float32 output."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return torch.tanh(self.conv(x)) * (1 + t.view(-1, 1, 1, 1) / 50)


def _algorithm_2_as_before(model, schedule, shape, generator, variance):
    """The loop dt.sample ran before the samplers module existed, verbatim."""
    xt = torch.randn(shape, generator=generator)
    for step in range(schedule.T - 1, -1, -1):
        t = torch.full((shape[0],), step, dtype=torch.long)
        eps_theta = model(xt, t).float()
        z = torch.randn(shape, generator=generator) if step > 0 else None
        xt = p_sample_step(schedule, eps_theta, xt, t, noise=z, variance=variance).x_prev
    return xt


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_with_steps_none_is_bit_identical_to_algorithm_2(variance):
    schedule = dt.linear_schedule(T=50, beta_1=1e-3, beta_T=0.1)
    torch.manual_seed(0)
    model = _TinyNet()
    before = _algorithm_2_as_before(model.eval(), schedule, (3, 1, 8, 8), torch.Generator().manual_seed(5), variance)
    now = dt.sample(model, schedule, (3, 1, 8, 8), generator=torch.Generator().manual_seed(5), variance=variance,
                    progress=False)
    assert torch.equal(before, now)


# ---------------------------------------------------------------- parity with diffusers


def _diffusers_loop(scheduler, model, x_T, noises=None, **step_kwargs):
    x = x_T.clone()
    for i, t in enumerate(scheduler.timesteps):
        eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        if noises is not None:
            step_kwargs["variance_noise"] = noises[i]
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


def _noises(steps, seed=1):
    """The noise our stochastic samplers draw: one z per step but the last (zeros there, where its weight is 0)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(steps - 1)] + [
        torch.zeros(SHAPE, dtype=torch.float64)]


@needs_diffusers
@pytest.mark.parametrize("steps", [1, 10, 25, 100])
@pytest.mark.parametrize("eta", [0.0, 1.0, 0.5])
def test_ddim_matches_diffusers(setup, steps, eta):
    from diffusers import DDIMScheduler

    schedule, model, x_T = setup
    scheduler = DDIMScheduler(num_train_timesteps=T, trained_betas=schedule.betas.numpy(), timestep_spacing="trailing",
                              set_alpha_to_one=True, clip_sample=False, prediction_type="epsilon")
    scheduler.set_timesteps(steps)  # diffusers' DDIM steps to t - T // steps, so steps must divide T here
    ours = _run("ddim", setup, steps, eta=eta)
    theirs = _diffusers_loop(scheduler, model, x_T, _noises(steps), eta=eta)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@needs_diffusers
def test_ddim_clip_x0_matches_diffusers_clipped_model_output(setup):
    from diffusers import DDIMScheduler

    schedule, _, x_T = setup
    model = _mixture_eps(schedule, 1.8 * MEANS)  # data outside [-1, 1], so that clipping bites
    scheduler = DDIMScheduler(num_train_timesteps=T, trained_betas=schedule.betas.numpy(), timestep_spacing="trailing",
                              set_alpha_to_one=True, clip_sample=True, clip_sample_range=1.0)
    scheduler.set_timesteps(10)
    ours = _run("ddim", (schedule, model, x_T), 10, eta=1.0, clip_x0=True)
    theirs = _diffusers_loop(scheduler, model, x_T, _noises(10), eta=1.0, use_clipped_model_output=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, _run("ddim", (schedule, model, x_T), 10, eta=1.0), atol=1e-3)


@needs_diffusers
@pytest.mark.parametrize("steps, variance_type, clip", [
    (100, "fixed_small", False), (100, "fixed_large", False), (10, "fixed_small", False), (29, "fixed_small", False),
    (1, "fixed_small", False), (10, "fixed_small", True), (100, "fixed_large", True),
])
def test_ddpm_matches_diffusers(setup, steps, variance_type, clip):
    """Full chain (steps = T) with both variances; respaced chains with beta_tilde.

    Respaced with sigma^2 = beta, diffusers adds noise of variance 1 - alpha_bar_{tau_1} on its last step,
    where Algorithm 2 has z = 0, so only beta_tilde is compared there.
    """
    from diffusers import DDPMScheduler

    schedule, model, x_T = setup
    if clip:
        model = _mixture_eps(schedule, 1.8 * MEANS)
    scheduler = DDPMScheduler(num_train_timesteps=T, trained_betas=schedule.betas.numpy(), timestep_spacing="trailing",
                              variance_type=variance_type, clip_sample=clip, prediction_type="epsilon")
    scheduler.set_timesteps(timesteps=trailing_timesteps(T, steps).tolist())
    variance = {"fixed_small": "beta_tilde", "fixed_large": "beta"}[variance_type]
    ours = _run("ddpm", (schedule, model, x_T), steps, variance=variance, clip_x0=clip)
    theirs = _diffusers_loop(scheduler, model, x_T, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def _dpm_scheduler(schedule, algorithm_type):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=schedule.betas.numpy(), algorithm_type=algorithm_type, solver_order=2,
        solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero", timestep_spacing="trailing",
        prediction_type="epsilon", thresholding=False,
    )


@needs_diffusers
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 20, 29, 50])
@pytest.mark.parametrize("name, algorithm_type", [("dpm_solver++", "dpmsolver++"),
                                                  ("dpm_solver++_sde", "sde-dpmsolver++")])
def test_dpm_solver_matches_diffusers(setup, steps, name, algorithm_type):
    schedule, model, x_T = setup
    scheduler = _dpm_scheduler(schedule, algorithm_type)
    scheduler.set_timesteps(timesteps=trailing_timesteps(T, steps).tolist())
    ours = _run(name, setup, steps)
    noises = _noises(steps) if name.endswith("sde") else None
    theirs = _diffusers_loop(scheduler, model, x_T, noises)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the samplers among themselves


def test_ddim_with_eta_1_is_respaced_ddpm_and_the_first_order_solvers_are_ddim(setup):
    for steps in (7, 20):
        torch.testing.assert_close(_run("ddim", setup, steps, eta=1.0), _run("ddpm", setup, steps), atol=1e-10, rtol=0)
    # two steps: a first-order step, then the last one to x0_hat, in both solvers
    torch.testing.assert_close(_run("dpm_solver++", setup, 2), _run("ddim", setup, 2, eta=0.0), atol=1e-10, rtol=0)
    torch.testing.assert_close(_run("dpm_solver++_sde", setup, 2), _run("ddim", setup, 2, eta=1.0), atol=1e-10, rtol=0)


def test_the_samplers_converge_to_the_data_with_an_exact_model(setup):
    """With eps* of a single point every sampler lands on the point, at any number of steps."""
    schedule, _, x_T = setup
    point = MEANS[:1]
    model = _mixture_eps(schedule, point, s0=0.0)
    for name in dt.SAMPLERS:
        for steps in (3, 10):
            x0 = _run(name, (schedule, model, x_T), steps)
            torch.testing.assert_close(x0, point.double().expand(SHAPE), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", dt.SAMPLERS)
def test_sample_dispatches_with_callback_generator_and_batches(name):
    schedule = _schedule()
    model = lambda x, t: 0.1 * x  # noqa: E731
    seen = []
    a = dt.sample(model, schedule, (5, 1, 2, 2), sampler=name, steps=4, generator=torch.Generator().manual_seed(3),
                  progress=False, callback=lambda t, xt, x0_hat: seen.append((t, xt.shape, x0_hat.shape)))
    assert [s[0] for s in seen] == [99, 74, 49, 24]
    assert all(s[1] == s[2] == (5, 1, 2, 2) for s in seen)
    b = dt.sample(model, schedule, (5, 1, 2, 2), sampler=name, steps=4, generator=torch.Generator().manual_seed(3),
                  progress=False)
    assert torch.equal(a, b) and a.dtype == torch.float32
    g = torch.Generator().manual_seed(3)
    loop = torch.cat([dt.sample(model, schedule, (n, 1, 2, 2), sampler=name, steps=4, generator=g, progress=False)
                      for n in (2, 2, 1)])
    batched = dt.sample(model, schedule, (5, 1, 2, 2), sampler=name, steps=4, progress=False, batch_size=2,
                        generator=torch.Generator().manual_seed(3))
    assert torch.equal(loop, batched)


def test_the_deterministic_samplers_use_no_noise_after_x_T():
    schedule = _schedule()
    model = lambda x, t: 0.1 * x  # noqa: E731
    for name, options in (("ddim", {}), ("dpm_solver++", {})):
        g = torch.Generator().manual_seed(3)
        dt.sample(model, schedule, (2, 1, 2, 2), sampler=name, steps=5, generator=g, progress=False, **options)
        after = torch.randn(1, generator=g)
        g2 = torch.Generator().manual_seed(3)
        torch.randn((2, 1, 2, 2), generator=g2)  # x_T only
        assert torch.equal(after, torch.randn(1, generator=g2)), name


# ---------------------------------------------------------------- bad input and non-finite samples


@pytest.mark.parametrize("kwargs, match", [
    ({"sampler": "euler"}, "sampler must be one of"),
    ({"sampler": "ddim", "steps": 0}, "steps must be an int between 1 and T = 100"),
    ({"sampler": "ddim", "steps": 101}, "steps must be an int between 1 and T = 100"),
    ({"steps": 2.5}, "steps must be an int"),
    ({"steps": True}, "steps must be an int"),
    ({"sampler": "ddim", "eta": -0.1}, r"eta must be a number in \[0, 1\]"),
    ({"sampler": "ddim", "eta": 1.5}, r"eta must be a number in \[0, 1\]"),
    ({"sampler": "dpm_solver++", "eta": 0.5}, "eta applies only to sampler='ddim'"),
    ({"sampler": "ddim", "variance": "beta"}, "variance applies only to sampler='ddpm'"),
    ({"variance": "large"}, "variance must be one of"),
])
def test_bad_sampler_options_are_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dt.sample(lambda x, t: x, _schedule(), (2, 1, 2, 2), progress=False, **kwargs)


@pytest.mark.parametrize("name", dt.SAMPLERS)
def test_sampling_stops_at_the_first_non_finite_sample(name):
    schedule = _schedule()

    def model(x, t):
        return torch.where(t.view(-1, 1, 1, 1) < 50, torch.nan, 0.1) * torch.ones_like(x)

    with pytest.raises(FloatingPointError, match=re.escape(f"({name}) produced a non-finite x_t after code step 49")):
        dt.sample(model, schedule, (2, 1, 2, 2), sampler=name, steps=T, progress=False)


# ---------------------------------------------------------------- command line


def test_cli_samples_with_a_fast_sampler_and_refuses_bad_options(tmp_path, capsys):
    import json

    from ddpm_tutor.__main__ import main

    out = tmp_path / "grid.png"
    record = tmp_path / "q.json"
    assert main(["sample", "--checkpoint", "pretrained", "--n", "2", "--sampler", "dpm_solver++_sde", "--steps", "3",
                 "--out", str(out), "--device", "cpu", "--quality-json", str(record)]) == 0
    assert out.exists() and "dpm_solver++_sde, 2 x 3 network evaluations" in capsys.readouterr().out
    saved = json.loads(record.read_text())
    assert (saved["sampler"], saved["steps"], saved["eta"], saved["variance"]) == ("dpm_solver++_sde", 3, 0.0, None)
    for argv, match in ((["--sampler", "ddim", "--steps", "401"], "steps must be an int between 1 and T = 400"),
                        (["--sampler", "ddpm", "--eta", "0.5"], "eta applies only to sampler='ddim'"),
                        (["--sampler", "ddim", "--eta", "2"], r"eta must be a number in \[0, 1\]")):
        with pytest.raises(SystemExit, match=match):
            main(["sample", "--checkpoint", "pretrained", "--n", "1", "--device", "cpu", "--out", str(out), *argv])


def test_on_an_accelerator_the_finite_check_runs_every_few_steps_and_names_the_interval():
    from ddpm_tutor.samplers import FiniteCheck

    check = FiniteCheck("ddim", torch.device("cuda"), every=4)  # no GPU needed: only the schedule of checks differs
    good, bad = torch.zeros(2), torch.tensor([0.0, float("nan")])
    for step in (99, 98, 97):
        check(bad if step == 97 else good, step, last=False)  # not checked yet: no host sync
    check(good, 96, last=False)  # checked: fine (a non-finite value could not have healed in a real sampler)
    check(bad, 95, last=False)
    with pytest.raises(FloatingPointError, match="between code steps 96 and 92"):
        for step in (94, 93, 92):
            check(bad, step, last=False)
    with pytest.raises(FloatingPointError, match="after code step 0"):
        FiniteCheck("ddpm", torch.device("cpu"))(bad, 0, last=True)


@pytest.mark.parametrize("name", dt.SAMPLERS)
def test_clip_x0_keeps_every_x0_hat_in_the_data_range(setup, name):
    schedule, _, x_T = setup
    model = _mixture_eps(schedule, 1.8 * MEANS)  # data outside [-1, 1]
    seen = []
    out = SAMPLER_FUNCTIONS[name](model, schedule, x_T, trailing_timesteps(T, 8), clip_x0=True, progress=False,
                                  generator=torch.Generator().manual_seed(0),
                                  callback=lambda t, xt, x0_hat: seen.append(x0_hat.abs().max().item()))
    assert len(seen) == 8 and max(seen) <= 1.0
    assert out.abs().max() <= 1.0 + 1e-12  # the last step lands on a clipped x0_hat
