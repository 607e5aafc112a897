# SPDX-License-Identifier: MIT
"""Export: to_plain, ONNX, torch.export programs, plain safetensors, checkpoints, the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from onelip import certify, export, models
from onelip import nn as onn
from onelip.cli import main
from onelip.export import CheckpointError
from onelip.nn._base import LipschitzModule

# Same ops on the same folded weights: bit-exact in practice; 1e-6 is the promise (float32).
TOL_PLAIN = 1e-6
# onnxruntime's Gemm/TopK kernels vs PyTorch's, float32 logits of size O(1).
TOL_ONNX = 1e-5

ACTIVATIONS = ["maxmin", "groupsort", "fullsort", "abs"]


def _perturbed_mlp(*, layer: str, activation: str, num_outputs: int, seed: int = 0,
                   in_features: int = 12, hidden=(16, 16)) -> nn.Module:
    """An mlp whose latent weights are far from their constrained values (as after training)."""
    torch.manual_seed(seed)
    model, _ = models.build("mlp", in_features=in_features, num_outputs=num_outputs,
                            hidden=list(hidden), layer=layer, activation=activation,
                            group_size=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ==== to_plain ==============================================================================


@pytest.mark.parametrize("layer", ["ortho", "spectral"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("num_outputs", [1, 5])
def test_to_plain_same_function_original_untouched(layer, activation, num_outputs):
    """plain(x) == model.eval()(x) within 1e-6; the model's weights and mode are unchanged."""
    model = _perturbed_mlp(layer=layer, activation=activation, num_outputs=num_outputs)
    model.train()
    before = _snapshot(model)
    params_before = [id(p) for p in model.parameters()]

    plain = export.to_plain(model)

    assert model.training, "to_plain changed the model's mode"
    assert [id(p) for p in model.parameters()] == params_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"to_plain modified {k}"
    assert not plain.training
    x = torch.randn(64, 12)
    with torch.no_grad():
        ref = model.eval()(x)
        out = plain(x)
    err = (out - ref).abs().max().item()
    assert err <= TOL_PLAIN, f"plain vs model: max error {err:.2e} > {TOL_PLAIN:.0e}"


def test_to_plain_has_only_plain_layers():
    model = _perturbed_mlp(layer="ortho", activation="groupsort", num_outputs=3)
    plain = export.to_plain(model)
    for m in plain.modules():
        assert not hasattr(m, "effective_weight"), f"{type(m).__name__} is a onelip layer"
        if isinstance(m, LipschitzModule):
            assert not list(m.parameters()) and not list(m.buffers()), type(m).__name__
    owners = {type(m) for m in plain.modules() if list(m.parameters(recurse=False))}
    assert owners == {nn.Linear}, f"parameters in {owners}"
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in plain.modules())
    # The exact folded weight: an orthogonal matrix for OrthoLinear.
    w = plain[1].weight.double()  # (16, 12): orthonormal columns
    gap = (w.T @ w - torch.eye(w.shape[1], dtype=w.dtype)).abs().max().item()
    assert gap < 1e-5, f"folded OrthoLinear weight is not orthogonal: |WWᵀ − I| = {gap:.2e}"
    # Its certified bound is still computed (exact SVD of the plain weights).
    assert certify.lipschitz_bound(plain) <= 1 + 1e-5


def test_to_plain_export_hook_register_and_errors():
    class Scaled(LipschitzModule):
        """A toy constrained layer with an export() hook: y = W x / ‖W‖_F."""

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 4))

        def lipschitz_bound(self):
            return 1.0

        def forward(self, x):
            return x @ (self.weight / self.weight.norm()).T

        def export(self):
            lin = nn.Linear(4, 4, bias=False)
            lin.weight.data.copy_(self.weight / self.weight.norm())
            return lin

    class Convex(LipschitzModule):
        """(1 − λ) x + λ g(x), exported as onelip.export.Residual."""

        def __init__(self, g, lam=0.25):
            super().__init__()
            self.g, self.lam = g, lam

        def lipschitz_bound(self):
            return 1.0

        def forward(self, x):
            return (1 - self.lam) * x + self.lam * self.g(x)

        def export(self):
            return export.Residual(export.to_plain(self.g), skip=1 - self.lam, scale=self.lam)

    class Unknown(LipschitzModule):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 4))

        def lipschitz_bound(self):
            return 1.0

        def forward(self, x):
            return x @ self.weight.T

    class WithExport(Unknown):  # the one mechanism: the class defines export()
        def export(self):
            lin = nn.Linear(4, 4, bias=False)
            lin.weight.data.copy_(self.weight)
            return lin

    net = onn.Sequential(Scaled(), onn.MaxMin(),
                         Convex(onn.Sequential(onn.OrthoLinear(4, 4), onn.Abs())))
    plain = export.to_plain(net)
    assert isinstance(plain[2], export.Residual)
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert (plain(x) - net.eval()(x)).abs().max() <= TOL_PLAIN

    with pytest.raises(TypeError, match="export"):
        export.to_plain(nn.Sequential(Unknown()))

    assert not hasattr(export, "register")  # one mechanism per job: export() on the class
    reg = WithExport()
    with torch.no_grad():
        assert torch.equal(export.to_plain(reg)(x), reg(x))


def test_plain_safetensors_roundtrip_with_residual(tmp_path):
    body = onn.Sequential(onn.OrthoLinear(6, 6), onn.GroupSort(3))
    net = nn.Sequential(nn.Flatten(), onn.SpectralLinear(6, 6), onn.FullSort(),
                        export.Residual(body, skip=0.5, scale=0.5), onn.FrobeniusLinear(6, 1))
    path = export.save_plain(net, tmp_path / "net.safetensors")
    loaded = export.load_plain(path)
    x = torch.randn(10, 6)
    with torch.no_grad():
        err = (loaded(x) - net.eval()(x)).abs().max().item()
    assert err <= TOL_PLAIN, f"reloaded plain model differs by {err:.2e}"
    assert isinstance(loaded[3], export.Residual) and loaded[3].skip == 0.5


def test_plain_file_written_by_0_1_still_loads(tmp_path):
    """0.1 named the plain blocks onelip.export.Residual / ChannelShift (0.2: onelip.nn)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    body = onn.Sequential(onn.OrthoLinear(6, 6), onn.GroupSort(3))
    net = nn.Sequential(export.Residual(body, skip=0.5, scale=0.5), onn.FrobeniusLinear(6, 1))
    path = export.save_plain(net, tmp_path / "net.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    assert '"onelip.nn.Residual"' in meta["architecture"]
    meta["architecture"] = meta["architecture"].replace('"onelip.nn.Residual"',
                                                        '"onelip.export.Residual"')
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata=meta)
    loaded = export.load_plain(old)
    x = torch.randn(10, 6)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net.eval()(x), atol=TOL_PLAIN)
    assert isinstance(loaded[0], export.Residual)


def test_load_plain_refuses_unknown_types_and_corrupt_files(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    net = _perturbed_mlp(layer="ortho", activation="maxmin", num_outputs=2)
    path = export.save_plain(net, tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    arch = json.loads(meta["architecture"])
    arch["children"]["2"]["type"] = "os.system"
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={**meta, "architecture": json.dumps(arch)})
    with pytest.raises(CheckpointError, match="unknown module type 'os.system'"):
        export.load_plain(bad)

    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        export.load_plain(trunc)


def _conv_net() -> nn.Module:
    """Every exportable layer family: orthogonal/spectral convs (zero and circular padding,
    stride), SLL and convex residuals, centering, pooling, downsampling, dense head."""
    torch.manual_seed(0)
    net = onn.Sequential(
        onn.OrthoConv2d(2, 8, 3), onn.GroupSort(2),
        onn.SpectralConv2d(8, 8, 3, input_size=(8, 8)), onn.BatchCentering(8), onn.MaxMin(),
        onn.SLLConv2d(8, 8),
        onn.ConvexResidual(onn.Sequential(onn.OrthoConv2d(8, 8, 3), onn.Abs()), 0.3,
                           learnable=True),
        onn.OrthoConv2d(8, 8, 3, stride=2, padding_mode="circular"), onn.GroupSort(4),
        onn.ScaledAvgPool2d(2), onn.InvertibleDownsample(2), onn.LayerCentering(),
        onn.GlobalL2NormPool2d(), nn.Flatten(),
        onn.SLLBlock(32), onn.OrthoLinear(32, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        net[3].running_mean.normal_()
    return net


def test_to_plain_conv_families(tmp_path):
    """Conv models: to_plain within 1e-6, the plain safetensors and .pt2 round trips."""
    net = _conv_net()
    net.train()
    before = _snapshot(net)
    plain = export.to_plain(net)
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    owners = {type(m).__name__ for m in plain.modules() if list(m.parameters(recurse=False))}
    assert owners <= {"Conv2d", "Linear", "ChannelShift"}, owners
    x = torch.randn(16, 2, 8, 8)
    with torch.no_grad():
        ref = net.eval()(x)
        err = (plain(x) - ref).abs().max().item()
        assert err <= TOL_PLAIN, f"conv net: plain vs model {err:.2e}"
        loaded = export.load_plain(export.save_plain(net, tmp_path / "c.safetensors"))
        assert (loaded(x) - ref).abs().max().item() <= TOL_PLAIN
        prog = torch.export.load(str(export.to_torch_program(net, tmp_path / "c.pt2",
                                                              input_shape=(2, 8, 8))))
        assert (prog.module()(x) - ref).abs().max().item() <= TOL_PLAIN


# ==== ONNX ==================================================================================


@pytest.mark.parametrize("num_outputs,activation", [(1, "maxmin"), (10, "groupsort"),
                                                    (10, "fullsort")])
def test_onnx_parity_and_radii(tmp_path, num_outputs, activation):
    """onnxruntime outputs match PyTorch within 1e-5 (GroupSort included), for several batch
    sizes (dynamic batch axis); certified radii computed from them equal ours."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    model = _perturbed_mlp(layer="ortho", activation=activation, num_outputs=num_outputs,
                           hidden=(32, 32))
    path = export.to_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input"
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert not any("onelip" in op.lower() for op in ops)
    model.eval()
    for n in (1, 7, 256):
        x = torch.randn(n, 12)
        out = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            ref = model(x)
        err = (out - ref).abs().max().item()
        assert out.shape == ref.shape
        assert err <= TOL_ONNX, f"batch {n}: ONNX vs PyTorch max error {err:.2e}"
        r_onnx = certify.certified_radius(out)
        r_ref = certify.certified_radius(ref)
        rerr = (r_onnx - r_ref).abs().max().item()
        assert rerr <= TOL_ONNX, f"batch {n}: radii differ by {rerr:.2e}"
    assert export.onnx_max_error(model, path, torch.randn(32, 12)) <= TOL_ONNX


def test_onnx_parity_conv(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net = _conv_net()
    path = export.to_onnx(net, tmp_path / "c.onnx", input_shape=(2, 8, 8))
    for n in (1, 9):
        x = torch.randn(n, 2, 8, 8)
        err = export.onnx_max_error(net, path, x)
        assert err <= TOL_ONNX, f"conv net, batch {n}: ONNX vs PyTorch {err:.2e}"


def test_torch_program_has_no_pickle_and_runs_without_onelip_layers(tmp_path):
    model = _perturbed_mlp(layer="spectral", activation="fullsort", num_outputs=4)
    path = export.to_torch_program(model, tmp_path / "m.pt2")
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            data = z.read(info)
            # A pickle starts with the PROTO opcode 0x80; torch.save zips hold data.pkl.
            assert not info.filename.endswith(".pkl"), info.filename
            if info.file_size and "weights/weight_" not in info.filename:
                assert data[:1] != b"\x80", f"{info.filename} looks pickled"
    prog = torch.export.load(str(path))
    x = torch.randn(9, 12)
    with torch.no_grad():
        err = (prog.module()(x) - model.eval()(x)).abs().max().item()
    assert err <= TOL_PLAIN


# ==== checkpoints (onelip.export.save / load) ===============================================


@pytest.fixture
def run_dir(tmp_path) -> Path:
    model, cfg = models.build("mlp", in_features=12, num_outputs=3, hidden=[16])
    export.save(model, tmp_path / "run", model_name="mlp", model_config=cfg)
    return tmp_path / "run"


def test_checkpoint_roundtrip(run_dir):
    model, cfg = export.load(run_dir)
    assert cfg["onelip_version"] and cfg["model"]["name"] == "mlp"
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in run_dir.iterdir())


def test_checkpoint_missing_keys(run_dir):
    from safetensors.torch import load_file, save_file

    w = run_dir / "model.safetensors"
    state = load_file(str(w))
    del state["1.weight"]
    save_file(state, str(w))
    with pytest.raises(CheckpointError, match=r"missing keys \['1.weight'\]"):
        export.load(run_dir)


def test_checkpoint_other_version(run_dir):
    cfg_path = run_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["onelip_version"] = "9.9.0"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="written by onelip 9.9.0"):
        export.load(run_dir)


def test_checkpoint_other_shapes(run_dir):
    cfg_path = run_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["config"]["hidden"] = [8]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"other shapes.*1\.weight: \(16, 12\) vs \(8, 12\)"):
        export.load(run_dir)


def test_checkpoint_corrupt_files(run_dir):
    w = run_dir / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        export.load(run_dir)
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        export.load(run_dir)


# ==== CLI ===================================================================================


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(["train", "--data", "two-moons", "--n-samples", "200", "--width", "16",
               "--depth", "2", "--activation", "groupsort", "--epochs", "1", "--quiet",
               "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.parametrize("fmt,name", [("torch", "m.pt2"), ("onnx", "m.onnx"),
                                      ("safetensors", "m.safetensors")])
def test_cli_export_formats(trained_run, tmp_path, capsys, fmt, name):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / name
    assert main(["export", str(trained_run), "--format", fmt, "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert out.is_file() and "max |export - model|" in line, line
    err = float(line.rsplit(":", 1)[1])
    assert err <= TOL_ONNX, line
    model, _ = export.load(trained_run)
    x = torch.randn(16, 2)
    with torch.no_grad():
        ref = model(x)
        if fmt == "torch":
            got = torch.export.load(str(out)).module()(x)
        elif fmt == "safetensors":
            got = export.load_plain(out)(x)
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    assert (got - ref).abs().max().item() <= TOL_ONNX

    # An existing file is kept unless --force.
    before = out.read_bytes()
    assert main(["export", str(trained_run), "--format", fmt, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", str(trained_run), "--format", fmt, "--out", str(out), "--force"]) == 0


def test_cli_export_errors(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), "--format", "torch",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert ".pt2" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--format", "safetensors",
                 "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "No run folder" in capsys.readouterr().err


# ==== errors and file modes =================================================================


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_wrong_input_shape_is_a_one_line_value_error(tmp_path, fmt):
    """A shape the model does not take: one line saying the expected shape, instead of the
    exporter's multi-line report with colour codes; nothing written."""
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    model = _perturbed_mlp(layer="ortho", activation="maxmin", num_outputs=2)
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt2")
    fn = export.to_onnx if fmt == "onnx" else export.to_torch_program
    with pytest.raises(ValueError) as e:
        fn(model, path, input_shape=(5,))
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert "does not take inputs of shape (5,)" in msg and "expected (12,)" in msg, msg
    assert list(tmp_path.iterdir()) == []
    conv = _conv_net()
    with pytest.raises(ValueError, match=r"expected \(2, H, W\)"):
        fn(conv, path, input_shape=(3, 8, 8))


def test_exported_files_are_readable_by_others(tmp_path):
    """Created with the permissions of any new file (0644 under umask 022), not the 0600 of
    a temporary file."""
    model = _perturbed_mlp(layer="ortho", activation="maxmin", num_outputs=2)
    old = os.umask(0o022)
    try:
        paths = [export.save_plain(model, tmp_path / "m.safetensors"),
                 export.to_torch_program(model, tmp_path / "m.pt2")]
        if importlib.util.find_spec("onnxscript") is not None:
            paths.append(export.to_onnx(model, tmp_path / "m.onnx"))
        os.umask(0o027)
        paths.append(export.save_plain(model, tmp_path / "group.safetensors"))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == {**{p.name: 0o644 for p in paths[:-1]}, "group.safetensors": 0o640}, modes
