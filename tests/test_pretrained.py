# SPDX-License-Identifier: MIT
"""The models shipped inside the package (onelip.pretrained, `pretrained:NAME` on the command
line): they load without a download, their bound is their card's, the command line certifies
and exports them from an image folder of their classes, certificates survive an attack, and
nothing is ever written into the package."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import onelip
from onelip import certify, pretrained
from onelip.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("cifar10-xs", "cifar10-xs-shift")
EPS = (0.05, 36 / 255, 0.2)


def _files() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the package's pretrained folder but bytecode."""
    root = pretrained.root()
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


@pytest.fixture
def untouched():
    """Fails the test if it changed anything in the package's pretrained folder."""
    before = _files()
    yield
    assert _files() == before, "something was written into onelip/pretrained"


@pytest.fixture(scope="module")
def model():
    m = pretrained.load("cifar10-xs")
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def images(model):
    """Two 32×32 RGB images per class (uint8, (20, 3, 32, 32)) that the model classifies as
    that class: smooth random images pushed up the class's margin by normalised gradient
    steps, quantised to 8 bits at every step (what a PNG holds)."""
    y = torch.arange(10).repeat_interleave(2)
    rows = torch.arange(len(y))
    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.1 * torch.randn(len(y), 3, 8, 8, generator=g)).clamp(0, 1)
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear").clamp(0, 1)
    for _ in range(60):
        xq = (x * 255).round() / 255
        with torch.no_grad():
            out = model(xq)
        if bool((out.argmax(1) == y).all()):
            break
        x.requires_grad_(True)
        o = model(x)
        margin = o[rows, y] - o.scatter(1, y[:, None], -torch.inf).amax(1)
        grad, = torch.autograd.grad(margin.clamp(max=0.5).sum(), x)
        x = (x.detach() + 0.5 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12)
             .view(-1, 1, 1, 1)).clamp(0, 1)
    xq = (x.detach() * 255).round().to(torch.uint8)
    assert bool((model(xq.float() / 255).argmax(1) == y).all()), "could not make the images"
    return xq, y


def _write_folder(root: Path, x: torch.Tensor, labels, classes) -> Path:
    from PIL import Image

    for i, (img, lab) in enumerate(zip(x, labels)):
        d = root / classes[int(lab)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"img{i:02d}.png")
    return root


@pytest.fixture
def folder(images, tmp_path, monkeypatch):
    """An image folder, ``<tmp>/cifar/<class>/imgNN.png``, each image in its class."""
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    x, y = images
    return _write_folder(tmp_path / "cifar", x, y, pretrained.card("cifar10-xs")["data"]
                         ["classes"])


def _radii(model, x_uint8, y) -> torch.Tensor:
    """margin/(√2·L) by hand, L the model's certified bound."""
    with torch.no_grad():
        out = model(x_uint8.float() / 255).double()
    rows = torch.arange(len(y))
    margin = out[rows, y] - out.scatter(1, y[:, None], -torch.inf).amax(1)
    return margin.clamp_min(0) / (math.sqrt(2) * model.lipschitz_bound())


# ==== the Python API ========================================================================


def test_names_lists_the_shipped_models_inside_the_package():
    names = pretrained.names()
    assert set(SHIPPED) <= set(names) and names == sorted(names)
    for name in names:
        folder = pretrained.path(name)
        assert folder.parent == Path(onelip.__file__).parent / "pretrained"
        assert {"config.json", "model.safetensors", "card.json"} <= {
            p.name for p in folder.iterdir()}
        assert (folder / "model.safetensors").stat().st_size < 16 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
def test_load_gives_an_eval_float32_model_with_the_cards_bound(name):
    m = pretrained.load(name)
    card = pretrained.card(name)
    assert card["name"] == name and not m.training
    assert all(t.dtype == torch.float32 for t in m.state_dict().values()
               if t.is_floating_point())
    cert = card["certificate"]
    assert m.lipschitz_bound() == pytest.approx(cert["lipschitz_bound"], rel=1e-12)
    # the bound includes Normalize's 1/min σ, from the card's own statistics
    assert cert["normalize_bound"] == pytest.approx(1 / min(card["data"]["std"]), rel=1e-5)
    assert m.lipschitz_bound() >= cert["normalize_bound"]
    assert cert["valid"] and cert["lipschitz_bound"] >= cert["needed"]
    v = card["validation"]
    figures = [v["clean"], *v["certified"].values()]
    assert all(0 <= f <= 1 for f in figures) and figures == sorted(figures, reverse=True)
    assert v["images"] == card["split"]["validation"] == 5000
    assert len(card["data"]["classes"]) == m(torch.zeros(1, 3, 32, 32)).shape[1] == 10


def test_unknown_names_are_one_line_errors_listing_the_names():
    for bad in ("nope", "../cifar10-xs", "cifar10-xs/", ""):
        with pytest.raises(ValueError) as err:
            pretrained.load(bad)
        msg = str(err.value)
        assert "\n" not in msg and all(n in msg for n in SHIPPED), msg
    with pytest.raises(ValueError):
        pretrained.card("nope")


def test_the_model_classifies_the_images(model, images):
    x, y = images
    radii = _radii(model, x, y)
    got = certify.certified_radius(model(x.float() / 255), y, lipschitz=model.lipschitz_bound())
    assert torch.allclose(got.double(), radii, rtol=1e-5, atol=1e-7)
    assert bool((radii > 0).all())


def test_certified_points_survive_an_attack(model, images):
    x, y = images
    xf = x.float() / 255
    radii = _radii(model, x, y)
    res = certify.attack_l2(model, xf, y, max_eps=2.0, steps=5, restarts=1, bisection=3,
                            deepfool_steps=20)
    found = torch.isfinite(res.min_norm)
    assert int(found.sum()) >= len(y) // 2  # the check is not vacuous
    assert bool((res.min_norm[found].double() >= radii[found]).all())
    flipped = model(res.x_adv[found]).argmax(1) != y[found]
    assert bool(flipped.all())


# ==== the command line ======================================================================


def test_certify_an_image_folder(model, images, folder, tmp_path, capsys, untouched):
    x, y = images
    out = tmp_path / "certify.json"
    radii = _radii(model, x, y)
    # the fixed radii, plus the median certified radius (which must split the points)
    eps = [f"{e:.6f}" for e in (*EPS, float(radii.median()))]
    rc = main(["certify", "pretrained:cifar10-xs", "--data", f"folder:{folder}", "--eps", *eps,
               "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "certified" in printed
    result = json.loads(out.read_text())["results"]
    (entry,) = result.values()
    assert entry["n_test"] == len(y) and entry["clean"] == 1.0  # labels: the recorded classes
    for e in eps:
        want = float((radii > float(e)).double().mean())
        assert entry["certified"][str(float(e))] == pytest.approx(want)
    assert 0 < entry["certified"][str(float(eps[-1]))] < 1  # the radius decides some points


def test_certify_maps_folder_classes_by_name(model, images, tmp_path, capsys, monkeypatch,
                                             untouched):
    """Each image filed under the next class: the model's predictions are now all wrong."""
    monkeypatch.setenv("ONELIP_CACHE", str(tmp_path / "cache"))
    x, y = images
    classes = pretrained.card("cifar10-xs")["data"]["classes"]
    wrong = _write_folder(tmp_path / "shifted", x, (y + 1) % 10, classes)
    out = tmp_path / "r.json"
    assert main(["certify", "pretrained:cifar10-xs", "--data", f"folder:{wrong}", "--eps",
                 "0.05", "--out", str(out)]) == 0
    (entry,) = json.loads(out.read_text())["results"].values()
    assert entry["clean"] == 0.0 and entry["certified"]["0.05"] == 0.0
    other = _write_folder(tmp_path / "other", x, y, [f"c{i}" for i in range(10)])
    assert main(["certify", "pretrained:cifar10-xs", "--data", f"folder:{other}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "airplane" in err and "c0" in err


def test_certify_without_out_prints_and_writes_nothing(folder, capsys, untouched):
    assert main(["certify", "pretrained:cifar10-xs-shift", "--data", f"folder:{folder}",
                 "--eps", "0.1"]) == 0
    assert "results not saved" in capsys.readouterr().out


def test_certify_without_data_says_what_to_pass(capsys, untouched):
    assert main(["certify", "pretrained:cifar10-xs"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--data folder:DIR" in err and "truck" in err


@pytest.mark.slow  # 15 s: the ONNX exporter on a 26-layer network (ONNX of lipconvnet is in
# the default run on small shapes: tests/test_export.py, tests/test_shift.py)
def test_export_onnx_matches_the_model(model, images, tmp_path, capsys, untouched):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "pretrained:cifar10-xs", "--format", "onnx", "--out", str(out)]) == 0
    x = images[0].float() / 255
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_inspect_shows_the_card(capsys, untouched):
    assert main(["inspect", "pretrained:cifar10-xs-shift"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("\n{") + 1:])
    card = pretrained.card("cifar10-xs-shift")
    assert info["lipschitz_bound"] == pytest.approx(card["certificate"]["lipschitz_bound"])
    assert info["pretrained"]["summary"] == card["summary"]
    assert info["lipschitz_estimate"] is None


@pytest.mark.parametrize("argv", [
    ["certify", "pretrained:nope", "--data", "folder:x"],
    ["inspect", "pretrained:nope"],
    ["export", "pretrained:nope", "--format", "onnx", "--out", "x.onnx"],
])
def test_cli_unknown_name(argv, capsys, tmp_path, monkeypatch, untouched):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown pretrained model 'nope'" in err
    assert all(n in err for n in SHIPPED)
    assert not any(tmp_path.iterdir())


def test_out_inside_the_package_is_refused(folder, capsys, untouched):
    inside = pretrained.path("cifar10-xs")
    assert main(["certify", "pretrained:cifar10-xs", "--data", f"folder:{folder}",
                 "--out", str(inside / "certify.json")]) == 2
    assert main(["export", "pretrained:cifar10-xs", "--format", "onnx",
                 "--out", str(inside / "m.onnx")]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 2 and all("read-only" in e for e in errs)


def test_help_names_pretrained(capsys):
    for cmd in ("certify", "inspect", "export"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens
        assert "pretrained:NAME" in text and all(n in text for n in SHIPPED)


# ==== the docs ==============================================================================


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_pretrained",
                                                  REPO / "benchmarks" / "ship_pretrained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_show_the_cards_as_shipped(ship):
    docs = (REPO / "docs" / "pretrained.md").read_text(encoding="utf-8")
    assert ship.render_docs(docs, pretrained.root()) == docs, \
        "docs/pretrained.md is stale: run benchmarks/ship_pretrained.py --docs"
    for name in SHIPPED:
        assert ship.card_markdown(pretrained.card(name)) in docs


def _hour_json(**recipe) -> dict:
    """A saved network's JSON as benchmarks/cifar10_hour.py writes it (a tiny network)."""
    return {"model": "lipconvnet",
            "config": {"width": 4, "blocks": 2, "depth": 1, "layer": "ortho",
                       "mean": [0.49, 0.48, 0.45], "std": [1.0, 1.0, 1.0]},
            "classes": [f"c{i}" for i in range(10)], "data": "CIFAR-10 (JPEG)",
            "recipe": {"loss": "offset-ce:temperature=0.25",
                       "loss_values": {"offset": 0.4, "temperature": 0.25}, "lr": 0.05,
                       "optimizer": "nesterov", "weight_decay": 1e-4, "epsilon_ramp": 0.3,
                       "amp": False, "normalisation": "center", "budget_seconds": 3600.0,
                       "clock": "wall", "threads": 2, "batch_size": 256, "clip": 1.0,
                       "schedule": "one-cycle", **recipe},
            "validation": {"clean": 0.5, "certified": {"36": 0.4, "72": 0.3},
                           "lipschitz_upper": 1.0, "val_size": 5000, "epochs": 20.0},
            "split": {"val_size": 5000, "split_seed": 0, "train_limit": 0},
            "written_by": "benchmarks/cifar10_hour.py"}


def test_card_of_an_hour_network_says_what_its_json_and_record_recorded(ship, tmp_path):
    """Optimizer, lr, weight decay, ε ramp, loss, threads, centred inputs, both clocks: from
    the JSON and the run record, not the older benchmarks' Adam / one thread / std."""
    from onelip import models

    meta = _hour_json()
    model, cfg = models.build("lipconvnet", **ship.model_kwargs(meta))
    record = {"train_seconds": 3601.5, "train_cpu_seconds": 6890.25, "steps": 9,
              "images_seen": 2304, "train_size": 45000,
              "machine": {"threads": 2, "cpu": "CPU", "cpu_count": 2, "torch": "2"}}
    json_path = tmp_path / "cifar10-hour.json"
    json_path.with_suffix(".safetensors").write_bytes(b"weights")
    b = {"own_bound_layers": {}, "lipschitz_bound": 1.0, "normalize_bound": 1.0,
         "independent_bound": 1.0, "needed": 1.0, "layers": 3}
    card = ship.make_card("hour", json_path, meta, model, cfg, b, record, None, None,
                          note=None, train_command="train", ship_command="ship")
    r, t = card["recipe"], card["training"]
    assert r["optimizer"] == ship.OPTIMIZERS["nesterov"] != ship.OPTIMIZERS["adam"]
    assert (r["lr"], r["weight_decay"], r["epsilon_ramp"], r["loss"]) == \
        (0.05, 1e-4, 0.3, "offset-ce:temperature=0.25")
    assert (t["clock"], t["threads"], t["wall_seconds"], t["cpu_seconds"]) == \
        ("wall", 2, 3601.5, 6890.25)
    assert "on 2 CPU threads" in card["summary"] and "one CPU thread" not in card["summary"]
    assert "centres" in card["data"]["input"] and "standardises" not in card["data"]["input"]
    text = ship.card_markdown(card)
    for part in ("Nesterov momentum 0.9 lr 0.05", "weight decay 0.0001", "first 30 %",
                 "inputs centred", "6,890 CPU s", "2 threads"):
        assert part in text, part
    # the older benchmarks' JSON (no optimizer, std ≠ 1, one thread) keeps its card
    old = _hour_json(normalisation="std", threads=1)
    del old["recipe"]["optimizer"]
    recipe, _, _, threads = ship.card_recipe(old)
    assert recipe["optimizer"] == "Adam" and threads == 1
    assert "standardises" in ship.card_input((3, 32, 32), (0.25, 0.24, 0.26), "std")


@pytest.mark.parametrize("change", [{"optimizer": "lbfgs"}, {"normalisation": "std"},
                                    {"clock": "cpu"}])
def test_card_refuses_a_recipe_it_cannot_describe(ship, change):
    meta = _hour_json(**change)
    with pytest.raises(SystemExit, match="ship_pretrained"):
        recipe, *_ = ship.card_recipe(meta)
        ship.card_input((3, 32, 32), meta["config"]["std"], recipe.get("normalisation"))
