"""Bad input and faults: each gets a clear error that names the argument and the fix, and nothing is lost.

One test (or a few) per case, numbered as in the list of cases they come from.
"""

import math

import pytest
import torch

import ddpm_tutor as dt


# ----------------------------------------------------------------------------- 7: schedules


def test_linear_schedule_with_one_step_cannot_ignore_beta_T():
    with pytest.raises(ValueError, match=r"T=1 has a single step.*beta_T=0\.02.*T >= 2"):
        dt.linear_schedule(T=1)
    assert dt.linear_schedule(T=1, beta_1=0.01, beta_T=0.01).betas.tolist() == [0.01]


def test_linear_schedule_refuses_a_decreasing_one_and_names_the_explicit_way():
    with pytest.raises(ValueError, match=r"beta_1=0\.02 > beta_T=0\.0001.*schedule_from_betas"):
        dt.linear_schedule(T=10, beta_1=0.02, beta_T=1e-4)
    decreasing = dt.schedule_from_betas(torch.linspace(0.02, 1e-4, 10))  # the explicit way works
    assert decreasing.betas[0] > decreasing.betas[-1]
    assert dt.linear_schedule(T=10, beta_1=0.01, beta_T=0.01).T == 10  # constant is allowed


@pytest.mark.parametrize("s", [math.inf, math.nan, -math.inf])
def test_cosine_schedule_refuses_a_non_finite_offset(s):
    with pytest.raises(ValueError, match=r"s must be a finite number.*0\.008"):
        dt.cosine_schedule(T=10, s=s)


@pytest.mark.parametrize("kwargs, name", [({"beta_1": "0.1"}, "beta_1"), ({"beta_T": None}, "beta_T"),
                                          ({"beta_1": True}, "beta_1")])
def test_linear_schedule_refuses_a_beta_that_is_not_a_number(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} must be a real number.*pass a float"):
        dt.linear_schedule(T=10, **kwargs)


def test_cosine_schedule_refuses_a_max_beta_that_is_not_a_number():
    with pytest.raises(ValueError, match=r"max_beta must be a real number"):
        dt.cosine_schedule(T=10, max_beta="0.999")
