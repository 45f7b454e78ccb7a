"""KL annealing schedules at given updates, and the free-bits floor."""

import math

import pytest
import torch

from fairseq_svae.errors import OptionError
from fairseq_svae.kl_control import KLSchedule, free_bits_kl


def test_logistic_schedule_follows_bowman_formula():
    schedule = KLSchedule("logistic", logistic_slope=0.0025, logistic_midpoint=2500)
    assert schedule(2500) == pytest.approx(0.5)
    assert schedule(0) == pytest.approx(1 / (1 + math.exp(6.25)))  # 0.00193
    assert schedule(5000) == pytest.approx(1 / (1 + math.exp(-6.25)))  # 0.99807
    assert schedule(10**9) == pytest.approx(1.0)


def test_linear_schedule_reaches_max_weight_and_stays():
    schedule = KLSchedule("linear", anneal_updates=1000, max_weight=0.8)
    assert schedule(0) == 0.0
    assert schedule(250) == pytest.approx(0.2)
    assert schedule(1000) == pytest.approx(0.8)
    assert schedule(5000) == pytest.approx(0.8)


def test_cyclical_schedule_restarts_each_cycle():
    # 4 cycles of 250 updates, rising for the first half of each (Fu et al. 2019).
    schedule = KLSchedule("cyclical", anneal_updates=1000, cycles=4, rise_fraction=0.5)
    assert schedule(0) == 0.0
    assert schedule(62) == pytest.approx(62 / 125)
    assert schedule(125) == pytest.approx(1.0)
    assert schedule(200) == pytest.approx(1.0)
    assert schedule(250) == 0.0  # second cycle starts from zero again
    assert schedule(300) == pytest.approx(50 / 125)
    assert schedule(1000) == 1.0
    assert schedule(4000) == 1.0


def test_constant_schedule_is_beta():
    assert KLSchedule("constant", max_weight=0.25)(0) == 0.25
    assert KLSchedule("constant", max_weight=0.25)(123456) == 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "sigmoid"}, "unknown KL schedule 'sigmoid'"),
        ({"name": "linear", "anneal_updates": 0}, "--kl-anneal-updates must be > 0"),
        ({"name": "cyclical", "rise_fraction": 0.0}, "--kl-cycle-rise-fraction"),
        ({"max_weight": -1.0}, "--kl-max-weight must be >= 0"),
    ],
)
def test_bad_schedule_options_name_the_flag(kwargs, message):
    with pytest.raises(OptionError, match=message):
        KLSchedule(**kwargs)


def test_free_bits_floor_applies_to_batch_averaged_kl_per_dimension():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]], requires_grad=True)
    # batch means: 0.2, 1.5, 0.0 -> floored at 0.5: 0.5, 1.5, 0.5 -> sum 2.5, times 2 sentences
    loss = free_bits_kl(kl, free_bits=0.5)
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    # Dimensions under the floor get no gradient; the one above it gets the plain gradient.
    assert torch.equal(kl.grad, torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))


def test_zero_free_bits_is_the_plain_summed_kl():
    kl = torch.rand(4, 6)
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(kl.sum().item())


# --- The KL rate controller (--target-kl) ---------------------------------------------------

from fairseq_svae.kl_control import KLRateController  # noqa: E402


def test_rate_controller_moves_the_weight_by_gain_times_the_clamped_relative_error():
    controller = KLRateController(target_kl=10.0, max_weight=1.0, gain=0.01)
    assert controller.weight == 0.0  # an autoencoder at first
    controller.observe(15.0)  # 50% above the target: the weight rises by half the gain
    assert controller.weight == pytest.approx(0.005)
    controller.observe(1000.0)  # far above: the step is clamped to the gain
    assert controller.weight == pytest.approx(0.015)
    controller.observe(0.0)  # far below: the step is clamped to -gain
    assert controller.weight == pytest.approx(0.005)
    controller.observe(0.0)
    assert controller.weight == 0.0  # never negative
    for _ in range(500):
        controller.observe(1e6)
    assert controller.weight == 1.0  # never above --kl-max-weight


def test_rate_controller_holds_the_kl_of_a_system_that_answers_the_weight():
    # A stand-in for training: the KL the model settles at falls with the weight (KL = 40 at
    # weight 0, 2 at weight 1, the ELBO's own rate). The controller must find the weight that
    # gives the target, from any start.
    def settled_kl(weight):
        return 40.0 * (0.05 ** weight)

    for target in (5.0, 12.0, 30.0):
        controller = KLRateController(target_kl=target, gain=0.01)
        for _ in range(3000):
            controller.observe(settled_kl(controller.weight))
        assert settled_kl(controller.weight) == pytest.approx(target, rel=0.02)


def test_rate_controller_state_round_trips_as_plain_numbers():
    controller = KLRateController(target_kl=20.0)
    for kl in (50.0, 40.0, 30.0):
        controller.observe(kl)
    state = controller.state_dict()
    assert all(isinstance(value, (int, float)) for value in state.values())
    restored = KLRateController(target_kl=20.0)
    restored.load_state_dict(state)
    assert restored.weight == controller.weight and restored.updates_seen == 3


@pytest.mark.parametrize("target, gain, max_weight", [(0.0, 1e-3, 1.0), (-5.0, 1e-3, 1.0), (5.0, 0.0, 1.0),
                                                       (5.0, 1e-3, 0.0)])
def test_rate_controller_refuses_settings_it_cannot_hold(target, gain, max_weight):
    with pytest.raises(OptionError):
        KLRateController(target_kl=target, gain=gain, max_weight=max_weight)
