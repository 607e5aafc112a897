# SPDX-License-Identifier: MIT
"""The records' recipe in the trainer: bf16 autocast on a CPU (``amp``), the ε ramp of the
margin-aware losses (``epsilon_ramp``), the optimisers (``nesterov``, ``nadam``), and their
command-line options."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import onelip.nn as onn
from onelip import losses, models, runs
from onelip.cli import main
from onelip.data import DataSplit
from onelip.train import TrainConfig, TrainingDiverged, _make_optimizer, fit
from onelip.train.config import bf16_support


def _data(n: int = 64, k: int = 3, seed: int = 0) -> DataSplit:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return DataSplit("toy", x, y, x[:8], y[:8], num_classes=k, input_shape=(6,))


def _net(k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return onn.Sequential(onn.OrthoLinear(6, 16), onn.MaxMin(), onn.OrthoLinear(16, k))


CFG = dict(epochs=3, batch_size=16, lr=1e-2, seed=1)  # 4 steps per epoch


def _one_line(capsys, rc: int, match: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and match in err, err
    return err


# ==== bf16 on the CPU ========================================================================


def test_bf16_support_follows_the_cpu_instruction_set():
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    ok, why = bf16_support("cpu")
    assert ok == native and (why == "") == native
    if not ok:  # the reason names what is missing and what this CPU has
        assert "AVX-512 BF16" in why and torch.backends.cpu.get_cpu_capability() in why
    assert bf16_support("cuda") == (True, "")
    assert bf16_support("mps")[0] is False


class _Spy(nn.Module):
    """Records whether the forward ran under CPU autocast and the dtype it returned."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        out = self.net(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    def lipschitz_bound(self):
        return self.net.lipschitz_bound()


def test_amp_on_a_bf16_cpu_autocasts_the_forward_and_keeps_weights_loss_and_bound_float32(
        monkeypatch):
    monkeypatch.setattr("onelip.train.config.bf16_support", lambda device: (True, ""))
    torch.manual_seed(0)
    net, _ = models.build("lipconvnet", input_shape=(2, 8, 8), num_outputs=3, width=4,
                          blocks=2, depth=1)
    model = _Spy(net)
    conv_dtypes = []
    for m in net.modules():
        if isinstance(m, onn.OrthoConv2d):
            m.register_forward_hook(lambda mod, i, out: conv_dtypes.append(out.dtype))
    seen_loss = []

    class Loss(losses.TauCrossEntropyLoss):
        def forward(self, input, target):
            seen_loss.append(input.dtype)
            return super().forward(input, target)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 2, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    data = DataSplit("img", x, y, x[:8], y[:8], num_classes=3, input_shape=(2, 8, 8))
    hist = fit(model, data, Loss(1.0), TrainConfig(**CFG, amp=True), progress=False)
    train_calls = [s for s in model.seen[:12]]
    assert all(on for on, _ in train_calls)  # every training forward under autocast
    assert conv_dtypes and set(conv_dtypes[:12]) == {torch.bfloat16}  # convolved in bf16
    assert set(seen_loss[:12]) == {torch.float32}  # the loss sees float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in hist)
    # the certificate's bound is computed in float32 and holds for the eval function
    x = torch.rand(200, 2, 8, 8)
    y = x + 1e-2 * torch.randn(200, 2, 8, 8)
    with torch.no_grad():
        ratio = (model(x) - model(y)).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= float(model.lipschitz_bound()) + 1e-6


def test_divergence_under_amp_says_to_try_without_it(monkeypatch):
    monkeypatch.setattr("onelip.train.config.bf16_support", lambda device: (True, ""))

    class Nan(losses.TauCrossEntropyLoss):
        def forward(self, input, target):
            return super().forward(input, target) * float("nan")

    with pytest.raises(TrainingDiverged, match="under bf16 autocast: try without --amp"):
        fit(_net(), _data(), Nan(1.0), TrainConfig(**CFG, amp=True), progress=False)


# ==== optimisers =============================================================================


@pytest.mark.parametrize("name, cls", [("nesterov", torch.optim.SGD),
                                       ("nadam", torch.optim.NAdam),
                                       ("sgd", torch.optim.SGD),
                                       ("adam", torch.optim.AdamW)])
def test_each_optimizer_is_the_named_one_and_trains(name, cls):
    cfg = TrainConfig(**{**CFG, "epochs": 6}, optimizer=name, weight_decay=1e-4)
    opt, _ = _make_optimizer(_net(), cfg, steps=24, steps_per_epoch=4)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-4
    if cls is torch.optim.SGD:
        assert group["nesterov"] == (name == "nesterov") and opt.defaults["momentum"] == 0.9
    if cls is torch.optim.NAdam:
        assert group["decoupled_weight_decay"] is True
    model = _net()
    data = _data(seed=2)
    with torch.no_grad():
        before = float(losses.TauCrossEntropyLoss(1.0)(model(data.x_train), data.y_train))
    fit(model, data, losses.TauCrossEntropyLoss(1.0), cfg, progress=False)
    with torch.no_grad():
        after = float(losses.TauCrossEntropyLoss(1.0)(model(data.x_train), data.y_train))
    assert after < before


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="Unknown optimizer 'lookahead'"):
        TrainConfig(optimizer="lookahead")


# ==== the ε ramp =============================================================================


class _Recording(losses.EMMALoss):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.scales: list[float] = []

    def forward(self, input, target):
        if self.training:
            self.scales.append(self.epsilon_scale)
        return super().forward(input, target)


def test_epsilon_ramp_scales_the_loss_eps_linearly_over_its_epochs_then_holds():
    loss = _Recording(epsilon=0.5)
    fit(_net(), _data(), loss, TrainConfig(**CFG, epsilon_ramp=1.5), progress=False)
    ramp_steps = round(1.5 * 4)
    expected = [min(1.0, (s + 1) / ramp_steps) for s in range(12)]
    assert loss.scales[:12] == pytest.approx(expected)
    assert loss.scales[0] == pytest.approx(1 / 6) and loss.scales[5:12] == [1.0] * 7
    assert loss.epsilon_scale == 1.0  # after fit: the loss as built


def test_without_a_ramp_the_loss_keeps_its_full_eps():
    loss = _Recording(epsilon=0.5)
    fit(_net(), _data(), loss, TrainConfig(**CFG), progress=False)
    assert set(loss.scales) == {1.0}


def test_epsilon_ramp_needs_a_loss_with_an_eps_and_at_most_the_run():
    with pytest.raises(ValueError, match="epsilon_ramp=1 needs a loss with an ε.*"
                                         "TauCrossEntropyLoss: set it to 0"):
        fit(_net(), _data(), losses.TauCrossEntropyLoss(1.0),
            TrainConfig(**CFG, epsilon_ramp=1), progress=False)
    with pytest.raises(ValueError, match=r"epsilon_ramp must lie in \[0, epochs=3\]"):
        TrainConfig(**CFG, epsilon_ramp=4)


def test_a_run_interrupted_mid_ramp_resumes_bit_for_bit(tmp_path, monkeypatch):
    cfg = TrainConfig(**CFG, epsilon_ramp=2.5, optimizer="nadam")
    ref = _net()
    fit(ref, _data(), losses.LogitAnnealingLoss(epsilon=0.3), cfg, progress=False)

    real = runs.write_checkpoint
    calls = []

    def write(folder, state):
        real(folder, state)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed after epoch 1, inside the ramp

    monkeypatch.setattr(runs, "write_checkpoint", write)
    killed = _net()
    with pytest.raises(KeyboardInterrupt):
        fit(killed, _data(), losses.LogitAnnealingLoss(epsilon=0.3), cfg, progress=False,
            checkpoint_dir=tmp_path)
    resumed = _net()
    fit(resumed, _data(), losses.LogitAnnealingLoss(epsilon=0.3), cfg, progress=False,
        resume_from=tmp_path)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


# ==== the command line =======================================================================

DIGITS = ["train", "--data", "digits", "--width", "16", "--depth", "1", "--batch-size", "128",
          "--epochs", "2", "--lr", "5e-3", "--val-fraction", "0.1", "--quiet"]


def test_cli_trains_with_la_a_ramp_and_nadam_and_records_the_loss_as_built(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main([*DIGITS, "--loss", "la", "--epsilon", "36/255", "--epsilon-ramp", "1",
               "--optimizer", "nadam", "--weight-decay", "1e-4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    rec = cfg["loss"]
    assert rec["name"] == "la" and rec["epsilon"] == pytest.approx(36 / 255)
    assert rec["offset"] == 2.0 and rec["temperature"] == 0.75 and rec["gamma"] == 5.0
    assert rec["lipschitz"] == pytest.approx(1.0, abs=1e-5)  # an MLP of 1-Lipschitz layers
    train = cfg["train"]
    assert train["epsilon_ramp"] == 1 and train["optimizer"] == "nadam"
    assert train["weight_decay"] == 1e-4


def test_cli_offset_ce_defaults_to_prachs_offset_scaled_by_the_bound(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main([*DIGITS, "--loss", "offset-ce", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "config.json").read_text())["loss"]
    bound = rec["lipschitz"] if "lipschitz" in rec else 1.0
    assert rec["offset"] == pytest.approx(2 * 2 ** 0.5 * bound * 36 / 255, rel=1e-5)
    assert rec["temperature"] == 0.25


def test_cli_margin_losses_refuse_a_binary_problem_and_a_ramp_without_eps(tmp_path, capsys):
    rc = main(["train", "--data", "two-moons", "--n-samples", "100", "--loss", "emma",
               "--quiet", "--out", str(tmp_path / "a")])
    _one_line(capsys, rc, "--loss emma:")
    rc = main([*DIGITS, "--loss", "ce", "--epsilon-ramp", "1", "--out", str(tmp_path / "b")])
    _one_line(capsys, rc, "--epsilon-ramp=1 needs a loss with an ε")
