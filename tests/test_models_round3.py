# SPDX-License-Identifier: MIT
"""``onelip train --set FIELD=VALUE`` takes every field of every model's config (issue 23,
item 12): the README says so, and lipconvnet's ``mean`` / ``std`` (empty tuples by default)
were refused with "expected a value like ()"."""

from __future__ import annotations

import pytest

from onelip import models
from onelip.cli._common import CLIError
from onelip.cli.train import _parse_model_set

# model -> field -> (what the command line says, the value the config must then hold).
# Every field of every model is here (checked below), so a new field needs a row.
SETTINGS = {
    "mlp": {
        "in_features": ("20", 20),
        "num_outputs": ("3", 3),
        "hidden": ("16,8", (16, 8)),
        "layer": ("spectral", "spectral"),
        "activation": ("groupsort", "groupsort"),
        "group_size": ("4", 4),
    },
    "convnet": {
        "input_shape": ("3,16,16", (3, 16, 16)),
        "num_outputs": ("3", 3),
        "width": ("8", 8),
        "stages": ("2", 2),
        "depth": ("1", 1),
        "layer": ("aol", "aol"),
        "activation": ("abs", "abs"),
        "group_size": ("4", 4),
        "head": ("global_l2", "global_l2"),
        "downsample": ("l2pool", "l2pool"),
        "depths": ("[1, 2, 1]", (1, 2, 1)),
        "pool_last": ("false", False),
        "hidden": ("(8,)", (8,)),
        "stem": ("unshuffle", "unshuffle"),
    },
    "lipresnet": {
        "input_shape": ("(3, 16, 16)", (3, 16, 16)),
        "num_outputs": ("3", 3),
        "width": ("8", 8),
        "blocks": ("1,1", (1, 1)),
        "block": ("convex", "convex"),
        "inner_factor": ("2", 2),
        "layer": ("aol", "aol"),
        "activation": ("abs", "abs"),
        "group_size": ("4", 4),
        "head": ("global_l2", "global_l2"),
    },
    "lipconvnet": {
        "input_shape": ("3,64,64", (3, 64, 64)),
        "num_outputs": ("3", 3),
        "width": ("8", 8),
        "blocks": ("2", 2),
        "depth": ("1", 1),
        "kernel_size": ("1", 1),
        "layer": ("aol", "aol"),
        "activation": ("abs", "abs"),
        "group_size": ("4", 4),
        "mean": ("0.49,0.48,0.45", (0.49, 0.48, 0.45)),
        "std": ("(0.25, 0.24, 0.26)", (0.25, 0.24, 0.26)),
    },
}
# Fields whose valid values depend on another: set together with the row's field.
PARTNERS = {("lipconvnet", "mean"): ["std=0.25,0.24,0.26"],
            ("lipconvnet", "std"): ["mean=(0.49,0.48,0.45)"]}


def test_every_model_field_has_a_row():
    for name in models.available():
        assert set(SETTINGS[name]) == models.config_fields(name), name


@pytest.mark.parametrize("name,field", [(n, f) for n in SETTINGS for f in SETTINGS[n]])
def test_set_takes_every_field(name, field):
    text, value = SETTINGS[name][field]
    items = [f"{field}={text}", *PARTNERS.get((name, field), [])]
    _, explicit = _parse_model_set(name, items, models.config_fields(name))
    cls = models.MODELS[name][0]
    cfg = cls(**explicit)  # the config's own checks accept it
    assert getattr(cfg, field) == value


def test_set_mean_and_std_build_lipconvnet_with_normalize():
    _, explicit = _parse_model_set(
        "lipconvnet", ["mean=0.5,0.5,0.5", "std=(0.25,0.25,0.25)", "blocks=1", "depth=1"],
        models.config_fields("lipconvnet"))
    model, cfg = models.build("lipconvnet", input_shape=(3, 2, 2), width=4, **explicit)
    assert cfg.std == (0.25, 0.25, 0.25)
    assert model.lipschitz_bound() == pytest.approx(4.0)  # Normalize: 1 / min std


@pytest.mark.parametrize("name,item,words", [
    ("lipconvnet", "mean=a,b,c", "comma-separated numbers"),
    ("lipresnet", "blocks=1.5,2", r"comma-separated integers like 2,2,2"),
    ("lipconvnet", "width=wide", "like 16"),
])
def test_set_bad_values_are_one_line(name, item, words):
    with pytest.raises(CLIError, match=words) as e:
        _parse_model_set(name, [item], models.config_fields(name))
    assert "\n" not in str(e.value)
