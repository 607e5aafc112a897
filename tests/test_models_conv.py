# SPDX-License-Identifier: MIT
"""The convolutional architectures: configs, flat and image inputs, the whole-model
Lipschitz claim, checkpoints, export and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from checks import adversarial_lipschitz_ratio, max_local_jacobian_norm

import onelip.nn as onn
from onelip import checkpoint, models
from onelip.certify import lipschitz_bound

TOL_F64 = 1e-9  # exact local Jacobians of a float64 model
TOL_F32 = 1e-4  # adversarial probes on float32 models

SMALL = [  # (name, fields): small enough for exact Jacobians (1×8×8 inputs)
    ("convnet", {"width": 4, "stages": 2}),
    ("convnet", {"width": 4, "stages": 2, "layer": "spectral", "head": "global_l2"}),
    ("convnet", {"width": 4, "stages": 2, "downsample": "l2pool", "stem": "unshuffle"}),
    ("convnet", {"width": 4, "stages": 2, "stem": "unshuffle"}),  # the strided preset's shape
    ("lipresnet", {"width": 4, "blocks": (1, 1)}),
    ("lipresnet", {"width": 4, "blocks": (1, 1), "block": "convex", "layer": "spectral"}),
]


def _build(name, fields, shape=(1, 8, 8), k=3):
    return models.build(name, input_shape=shape, num_outputs=k, **fields)


def _train_steps(model, shape, steps=25, lr=0.02):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        x = torch.randn(8, *shape, dtype=dtype)
        y = torch.randint(0, 3, (8,))
        loss = torch.nn.functional.cross_entropy(16 * model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_registered():
    assert {"convnet", "lipresnet"} <= set(models.available())


@pytest.mark.parametrize("name,fields", SMALL)
def test_flat_and_image_inputs_and_bound(name, fields):
    model, cfg = _build(name, fields)
    model.eval()
    x = torch.randn(5, *cfg.input_shape)
    assert torch.allclose(model(x), model(x.flatten(1)))
    assert model(x).shape == (5, 3)
    assert lipschitz_bound(model) == pytest.approx(1.0)


@pytest.mark.parametrize("name,fields", SMALL)
def test_whole_model_is_1_lipschitz_after_training(name, fields):
    shape = (1, 8, 8)
    model, _ = _build(name, fields, shape)
    model = _train_steps(model.double(), shape)
    model.eval()
    jac = max_local_jacobian_norm(model, shape, n_points=3, dtype=torch.float64)
    assert 1e-4 < jac <= 1 + TOL_F64, f"local Jacobian norm {jac}"


def test_whole_model_adversarial_float32():
    shape = (1, 8, 8)
    model, _ = _build("convnet", {"width": 4, "stages": 2}, shape)
    model = _train_steps(model, shape).eval()
    ratio = adversarial_lipschitz_ratio(model, shape, steps=50, n_pairs=8)
    assert ratio <= 1 + TOL_F32, ratio


def test_configs_validate_and_roundtrip(tmp_path):
    with pytest.raises(ValueError, match="input_shape"):
        models.build("convnet", input_shape=(784,))
    with pytest.raises(ValueError, match="layer"):
        models.build("convnet", layer="dense")
    with pytest.raises(ValueError, match="block"):
        models.build("lipresnet", block="bottleneck")
    with pytest.raises(ValueError, match="divisible"):
        models.build("convnet", width=5)
    with pytest.raises(ValueError, match="stem"):
        models.build("convnet", stem="patchify")
    with pytest.raises(ValueError, match="even"):
        models.build("convnet", input_shape=(1, 7, 7), stem="unshuffle")
    # JSON lists (as in config.json) become tuples; the checkpoint rebuilds the same model.
    model, cfg = models.build("lipresnet", input_shape=[1, 8, 8], num_outputs=3, width=4,
                              blocks=[1, 1])
    assert cfg.input_shape == (1, 8, 8) and cfg.blocks == (1, 1)
    _train_steps(model, (1, 8, 8), steps=3)
    checkpoint.save(model, tmp_path / "run", model_name="lipresnet", model_config=cfg)
    loaded, _ = checkpoint.load(tmp_path / "run")
    x = torch.randn(4, 64)
    assert torch.allclose(loaded.eval()(x), model.eval()(x), atol=1e-6)


def test_export_to_plain():
    from onelip.export import to_plain

    for name, fields in SMALL:
        model, cfg = _build(name, fields)
        _train_steps(model, cfg.input_shape, steps=3)
        model.eval()
        plain = to_plain(model)
        x = torch.randn(4, *cfg.input_shape)
        assert torch.allclose(plain(x), model(x), atol=1e-5), name
        kinds = {type(m).__name__ for m in plain.modules()}
        assert not kinds & {"OrthoConv2d", "SpectralConv2d", "SLLConv2d", "OrthoLinear"}, kinds


def test_cli_trains_a_convnet(tmp_path):
    """`onelip train --model convnet` end to end (digits: 8×8 images, a few seconds)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "onelip.cli", "train", "--data", "digits", "--model",
           "convnet", "--width", "4", "--epochs", "2", "--quiet", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == "convnet"
    assert cfg["model"]["config"]["input_shape"] == [1, 8, 8]
    assert cfg["model"]["config"]["width"] == 4
    res = subprocess.run([sys.executable, "-m", "onelip.cli", "certify", str(out),
                          "--eps", "0.1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_unshuffle_stem_replaces_the_first_pooling():
    model, cfg = _build("convnet", {"width": 4, "stages": 2, "downsample": "l2pool",
                                    "stem": "unshuffle"}, shape=(1, 8, 8))
    kinds = [type(m).__name__ for m in model]
    assert kinds[1] == "InvertibleDownsample" and kinds.count("L2NormPool2d") == 1
    assert model[2].in_channels == 4  # the first convolution sees 4 channels at 4×4
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_cli_set_fields_and_preset(tmp_path, capsys):
    """`--set FIELD=VALUE` reaches any config field (typed from its default), `--set
    preset=tutorial` gives the deel-torchlip tutorial's size; mistakes are clear errors.
    (In process: the console script's own exit status and one-line errors are tested in
    test_cli_errors.)"""
    from onelip.cli import main

    out = tmp_path / "run"
    base = ["train", "--data", "digits", "--model", "convnet", "--epochs", "1", "--quiet"]
    rc = main(base + ["--width", "4", "--set", "preset=tutorial", "--set", "hidden=8,6",
                      "--set", "stem=unshuffle", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())["model"]["config"]
    assert cfg["width"] == 4 and cfg["hidden"] == [8, 6] and cfg["stages"] == 2
    assert cfg["downsample"] == "l2pool" and cfg["stem"] == "unshuffle"
    for bad, msg in [("colour=red", "no config field 'colour'"), ("width=wide", "width=wide"),
                     ("preset=huge", "unknown preset 'huge'"), ("width", "FIELD=VALUE")]:
        capsys.readouterr()
        rc = main(base + ["--set", bad, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (bad, err)
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_cli_fashion_mnist_convnet(tmp_path):
    """The real data set (needs `make data`): one epoch of a small convnet."""
    out = tmp_path / "fm"
    cmd = [sys.executable, "-m", "onelip.cli", "train", "--data", "fashion-mnist", "--model",
           "convnet", "--width", "8", "--epochs", "1", "--quiet", "--eval-test", "--out",
           str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["test_acc"] > 0.7


# ==== degenerate configurations are refused up front =========================================


@pytest.mark.parametrize("fields,most", [
    ({"stages": 10}, 4),                                              # 8 → 4 → 2 → 1
    ({"stages": 5}, 4),
    ({"stages": 4, "downsample": "l2pool"}, 3),                       # 8 → 4 → 2 → 1 (pooled)
    ({"stages": 4, "stem": "unshuffle"}, 3),                          # 8 → 4 (stem) → 2 → 1
    ({"stages": 4, "stem": "unshuffle", "downsample": "l2pool"}, 3),
])
def test_convnet_too_many_stages_names_the_most_allowed(fields, most):
    """Before: `--set stages=10` on 8×8 images built 1×1 maps with 16,384 channels (minutes to
    even construct)."""
    with pytest.raises(ValueError, match=rf"stages={fields['stages']} is too many for 8×8 "
                                         rf"inputs: .*at most {most} stages") as e:
        models.build("convnet", input_shape=(1, 8, 8), width=2, **fields)
    assert "\n" not in str(e.value)
    # the largest allowed number of stages builds, and ends on a 1×1 map
    model, _ = models.build("convnet", input_shape=(1, 8, 8), num_outputs=3, width=2,
                            **{**fields, "stages": most})
    feats = model[:-1](torch.randn(2, 1, 8, 8))
    assert feats.shape == (2, 2 * 2 ** (most - 1)) and model(torch.randn(2, 64)).shape == (2, 3)


def test_convnet_stages_on_non_square_and_odd_inputs():
    # the smaller side decides: 4 → 2 → 1 allows 3 stages; 7 → 4 → 2 → 1 allows 4
    with pytest.raises(ValueError, match="16×4 inputs: stage 4 .* at most 3 stages"):
        models.build("convnet", input_shape=(1, 16, 4), width=2, stages=4)
    model, _ = models.build("convnet", input_shape=(1, 16, 4), width=2, stages=3, num_outputs=2)
    assert model(torch.randn(3, 64)).shape == (3, 2)
    models.build("convnet", input_shape=(1, 7, 7), width=2, stages=4)
    with pytest.raises(ValueError, match="at most 4 stages"):
        models.build("convnet", input_shape=(1, 7, 7), width=2, stages=5)
    with pytest.raises(ValueError, match="too small for any stage"):
        models.build("convnet", input_shape=(1, 1, 1), width=2, stages=1, downsample="l2pool")


def test_lipresnet_too_many_stages_names_the_most_allowed():
    with pytest.raises(ValueError, match=r"blocks=\[1, 1, 1, 1, 1, 1, 1, 1, 1, 1\] \(10 stages\) "
                                         r"is too many for 8×8 inputs: .*at most 4 stages"):
        models.build("lipresnet", input_shape=(1, 8, 8), width=2, blocks=(1,) * 10)
    models.build("lipresnet", input_shape=(1, 8, 8), width=2, blocks=(0, 0, 0, 1))


def test_absurd_channel_growth_is_refused():
    """width·2^(stages-1) (and SLL's inner channels) may not exceed MAX_CHANNELS (4096)."""
    from onelip.models._common import MAX_CHANNELS

    assert MAX_CHANNELS == 4096
    with pytest.raises(ValueError, match=r"width·2\^\(stages-1\) = 1024·2\^3 = 8192 channels "
                                         r"is more than onelip builds \(4096"):
        models.build("convnet", width=1024, stages=4)  # 28×28 allows the 4 stages
    with pytest.raises(ValueError, match="= 8192 channels"):
        models.build("lipresnet", width=2048, blocks=(1, 1, 1))
    with pytest.raises(ValueError, match=r"inner_factor·\(stage channels\) = 2·4096 = 8192"):
        models.build("lipresnet", width=2048, blocks=(1, 1), inner_factor=2)


def test_cli_refuses_too_many_stages_before_building(tmp_path, capsys):
    from onelip.cli import main

    rc = main(["train", "--data", "digits", "--model", "convnet", "--set", "stages=10",
               "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "stages=10 is too many for 8×8 inputs" in err and "at most 4 stages" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", list(onn.CONV_LAYERS))
def test_cli_trains_and_certifies_every_conv_family(tmp_path, capsys, family):
    """`--set layer=NAME` of every family of onelip.nn.CONV_LAYERS trains lipconvnet from the
    command line and certifies it with the whole network's bound (that of its layers: 1)."""
    from onelip.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "lipconvnet", "--set", f"layer={family}",
                 "--set", "width=4", "--set", "blocks=2", "--set", "depth=1", "--epochs", "1",
                 "--quiet", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())["model"]["config"]
    assert cfg["layer"] == family
    assert main(["certify", str(out), "--eps", "0.1"]) == 0
    assert "L ≤ 1.0000" in capsys.readouterr().out
