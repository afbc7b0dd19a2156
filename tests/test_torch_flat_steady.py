"""SGD(flat=True)'s steady steps (torch_flat_steady: the last clean step's plans run again):
every change the full step would notice still reaches the params, bit for bit as
torch.optim.SGD on a copy."""
import pytest
import torch

import fastmomentum.torch as fmt
from test_torch_flat import MLP, Conv, train

pytestmark = pytest.mark.skipif(not fmt.FAST_PATH, reason="flat steps need the fast path")


def steady_before(step, opt):
    if step == 3 and isinstance(opt, fmt.SGD):  # the first tamper meets held plans
        assert opt._flat_steady.active


def hyperparameters(step, model, opt):
    steady_before(step, opt)
    group = opt.param_groups[0]
    if step == 3:
        group.update(momentum=0.5, dampening=0.2, weight_decay=0.01, maximize=True)
    if step == 4:
        group.update(nesterov=True, dampening=0.0, maximize=False)
    if step == 5:
        group["lr"] = torch.tensor(0.3)


def momentum_off_and_on(step, model, opt):
    steady_before(step, opt)
    if step == 3:
        opt.param_groups[0]["momentum"] = 0.0
    if step == 5:
        opt.param_groups[0]["momentum"] = 0.9


@pytest.mark.parametrize("between", [hyperparameters, momentum_off_and_on],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("model_class", [MLP, Conv], ids=lambda c: c.__name__)
def test_steady_steps_read_the_hyperparameters(model_class, between):
    train(model_class, dict(momentum=0.9), steps=7, between=between)


def test_steady_steps_take_an_added_param_group():
    extra_t, extra_o = (torch.nn.Parameter(torch.arange(4.0)) for _ in range(2))

    def add_group(step, model, opt):
        steady_before(step, opt)
        extra = extra_o if isinstance(opt, fmt.SGD) else extra_t
        if step == 3:
            opt.add_param_group(dict(params=[extra], lr=0.2, momentum=0.9))
        if step >= 3:
            extra.grad = torch.full((4,), 0.5 + step)
    train(Conv, dict(momentum=0.9), steps=6, between=add_group)
    assert torch.equal(extra_t, extra_o)


def test_steady_steps_take_a_loaded_state_dict():
    saved = {}

    def load(step, model, opt):
        steady_before(step, opt)
        key = type(opt).__module__
        if step == 2:
            saved[key] = opt.state_dict()
            saved[key] = {"state": {k: {"momentum_buffer": v["momentum_buffer"].clone() * 3}
                                    for k, v in saved[key]["state"].items()},
                          "param_groups": saved[key]["param_groups"]}
        if step == 4:
            opt.load_state_dict(saved[key])
    train(Conv, dict(momentum=0.9), steps=6, between=load)


def test_a_group_leaving_the_fast_path_is_stepped_by_torch():
    def tensor_weight_decay(step, model, opt):
        steady_before(step, opt)
        if step == 3:
            opt.param_groups[1]["weight_decay"] = torch.tensor(0.25)
    _, opt = train(Conv, dict(momentum=0.9), steps=5, between=tensor_weight_decay)
    assert not opt._flat_steady.active


def test_momentum_turned_on_leaves_plans_without_momentum():
    def momentum_on(step, model, opt):
        steady_before(step, opt)
        if step == 3:
            opt.param_groups[0]["momentum"] = 0.9
    train(MLP, dict(momentum=0.0), steps=6, between=momentum_on)


def test_steady_steps_stop_with_the_fast_path(monkeypatch):
    """FAST_PATH switched off (as SGD._fast_path_fits reads it): torch steps, not plans."""
    seen = []

    def switch_off(step, model, opt):
        steady_before(step, opt)
        if step == 3:
            monkeypatch.setattr(fmt, "FAST_PATH", False)
        if isinstance(opt, fmt.SGD):
            seen.append(opt._flat_steady.active)
    _, opt = train(MLP, dict(momentum=0.9), steps=6, between=switch_off)
    assert seen[3] and not any(seen[4:])
    assert opt.kernel_params == 0
