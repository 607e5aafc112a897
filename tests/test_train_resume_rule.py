# SPDX-License-Identifier: MIT
"""The 0.3 training package: the resume rule stated once (``onelip.train.resume``) and applied
by ``fit`` and ``onelip train``; ``onelip train``'s defaults read from ``TrainConfig``; the data
order hook ``fit(sampler=)``; library errors that name library arguments, spelled as flags by
the CLI."""

from __future__ import annotations

import copy
import inspect
from dataclasses import fields, replace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from onelip import runs
from onelip._errors import NamesArguments
from onelip.cli import build_parser
from onelip.cli._common import FLAGS, LazyDefault, error_text
from onelip.train import TrainConfig, TrainingDiverged, fit, resume

CFG = TrainConfig(epochs=2, batch_size=16, lr=1e-2, seed=3)


def _data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _train(cfg=CFG, **kw):
    model = _net()
    hist = fit(model, _data(), torch.nn.CrossEntropyLoss(), cfg, progress=False, **kw)
    return model, hist


# ==== the resume rule ========================================================================


def test_the_rule_places_every_config_field_once_and_its_table_lists_them():
    names = [f.name for f in fields(TrainConfig)]
    same, free = set(resume.SAME_ON_RESUME), set(resume.MAY_DIFFER)
    assert not same & free and same | free == set(names), (same, free)
    table = resume.__doc__
    for name in names:
        assert f"\n{name} " in table, f"{name} missing from the table of onelip.train.resume"


def test_fit_refuses_a_trajectory_field_and_accepts_a_free_one(tmp_path):
    _, _ = _train(checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"differs from the saved run's: lr 0\.02 \(saved 0\.01\)"):
        _train(replace(CFG, lr=2e-2), resume_from=tmp_path)
    model, hist = _train(replace(CFG, epochs=3, divergence_guard=False), resume_from=tmp_path)
    assert [r["epoch"] for r in hist] == [1, 2, 3]


def test_epochs_fewer_than_trained_are_refused_in_one_place():
    resume.check_epochs(2, 2)  # an unfinished run's last epoch: nothing left, allowed
    with pytest.raises(resume.ResumeError) as info:
        resume.check_epochs(3, 2)
    assert "more than epochs=2" in str(info.value) and info.value.arguments == ("epochs",)
    with pytest.raises(resume.ResumeError) as info:
        resume.check_epochs(2, 2, finished=True)
    assert info.value.finished and info.value.done == 2


def test_differences_compare_tuples_and_lists_alike_and_skip_what_may_differ():
    saved = {"augment": ["crop"], "lr": 0.1, "device": "cpu", "data": "mnist"}
    now = {"augment": ("crop",), "lr": 0.1, "device": "cuda", "data": "digits",
           "world_size": 4}
    assert resume.differences(saved, now) == [resume.Difference("data", "digits", "mnist")]


# ==== defaults stated once ===================================================================


def test_onelip_train_defaults_are_trainconfig_defaults():
    args = build_parser().parse_args(["train", "--out", "x"])
    LazyDefault.resolve(args)
    shared = [f for f in fields(TrainConfig) if hasattr(args, f.name)]
    assert len(shared) >= 12
    for f in shared:
        if f.name == "augment":  # a comma-separated string on the command line; None: ()
            assert args.augment is None and f.default == ()
            continue
        assert getattr(args, f.name) == f.default, f.name


# ==== the data order hook ====================================================================


def test_the_default_sampler_is_the_permutation_of_fits_generator():
    a, _ = _train()
    b, _ = _train(sampler=lambda n, g: torch.randperm(n, generator=g))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_a_sampler_sets_the_order_and_draws_from_fits_generator():
    seen = []

    def oversample(n, g):  # the first 8 samples, over and over
        order = torch.randint(8, (n,), generator=g)
        seen.append(order)
        return order

    a, _ = _train(sampler=oversample)
    b, _ = _train(sampler=oversample)
    assert len(seen) == 2 * CFG.epochs and int(seen[0].max()) < 8
    assert torch.equal(seen[0], seen[CFG.epochs]), "seeded by config.seed"
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_a_sampler_resumes_bit_for_bit(tmp_path):
    def order(n, g):
        return torch.randint(n, (n,), generator=g)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # after the checkpoint of epoch 2

    cfg = replace(CFG, epochs=3)
    ref, _ = _train(cfg, sampler=order)
    with pytest.raises(KeyboardInterrupt):
        _train(cfg, checkpoint_dir=tmp_path, sampler=order, on_epoch=stop)
    cont, _ = _train(cfg, sampler=order, resume_from=tmp_path)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, cont.state_dict()[k]), k


def test_a_sampler_of_the_wrong_shape_or_for_a_dataloader_is_refused():
    with pytest.raises(ValueError, match="1-D integer tensor of 64 indices"):
        _train(sampler=lambda n, g: torch.arange(n - 1))
    with pytest.raises(ValueError, match=r"indices outside \[0, 64\)"):
        _train(sampler=lambda n, g: torch.arange(n) + 1)
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    with pytest.raises(ValueError, match="a DataLoader has its own order"):
        fit(_net(), loader, torch.nn.CrossEntropyLoss(), CFG, progress=False,
            sampler=lambda n, g: torch.randperm(n, generator=g))


def test_a_sampler_orders_a_dataset_too():
    x, y = _data()
    ds = torch.utils.data.Subset(TensorDataset(x, y), range(64))  # not a TensorDataset
    order = lambda n, g: torch.randperm(n, generator=g)  # noqa: E731
    a = _net()
    fit(a, ds, torch.nn.CrossEntropyLoss(), CFG, progress=False, sampler=order)
    b, _ = _train(sampler=order)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k


# ==== library errors name library arguments ==================================================


def test_divergence_names_lr_and_the_cli_spells_it_as_a_flag():
    err = TrainingDiverged(3, 7, float("nan"), 0.5)
    assert str(err).endswith("lower lr (now 0.5)") and err.arguments == ("lr",)
    assert error_text(err).endswith("lower --lr (now 0.5)")
    assert isinstance(err, FloatingPointError)


def test_amp_refused_on_cpu_names_the_amp_argument(monkeypatch):
    monkeypatch.setattr("onelip.train.config.bf16_support", lambda device: (False, "why"))
    with pytest.raises(ValueError) as info:
        TrainConfig(amp=True)
    assert str(info.value) == "amp (bf16 autocast) is refused on cpu, not ignored: why"
    assert error_text(info.value).startswith("--amp (bf16 autocast) is refused on cpu")


def test_run_folder_errors_name_path_and_overwrite(tmp_path):
    run = tmp_path / "run"
    model = torch.nn.Linear(2, 1)
    runs.write_model(run, model)
    with pytest.raises(runs.OutputError) as info:
        runs.check_target(run)
    assert "choose another path or pass overwrite=True to overwrite it" in str(info.value)
    assert error_text(info.value).endswith("choose another --out or pass --force to "
                                           "overwrite it")
    with pytest.raises(runs.CheckpointError) as info:
        runs.load_config(tmp_path / "nowhere")
    assert "onelip train" not in str(info.value) and "write_model" in str(info.value)
    assert error_text(info.value).endswith(f"train one with `onelip train --out "
                                           f"{tmp_path / 'nowhere'}`")


def test_check_target_has_no_flag_parameters():
    for fn in (runs.check_target, runs.new_run, runs.resumable_run):
        assert not {"flag", "option"} & set(inspect.signature(fn).parameters), fn


def test_every_argument_the_library_names_has_a_flag():
    # the arguments of the errors above, and those of runs' messages
    names = {"lr", "amp", "epochs", "path", "overwrite", "resume", "train_run"}
    assert names <= set(FLAGS)
    assert issubclass(runs.OutputError, NamesArguments)


def test_fit_is_short():
    src = inspect.getsource(fit)
    assert len(src.rstrip().splitlines()) < 80


def test_a_model_copy_is_not_touched_by_a_refused_resume(tmp_path):
    _train(checkpoint_dir=tmp_path)
    model = _net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError):
        fit(model, _data(), torch.nn.CrossEntropyLoss(), replace(CFG, seed=4),
            progress=False, resume_from=tmp_path)
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k
