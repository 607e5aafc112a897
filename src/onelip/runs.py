# SPDX-License-Identifier: MIT
"""Run folders: safetensors weights + a JSON config. No pickle anywhere.

(``onelip.checkpoint``, its name in 0.1, is an alias of this module for one release.)

A run folder ``runs/NAME/`` holds:

* ``model.safetensors`` — the ``state_dict`` (latent weights and persistent buffers); its
  metadata holds the SHA-256 of the config's model section;
* ``config.json`` — ``{"onelip_version", "model", "integrity", "data", "loss", "train"}``: all
  that is needed to rebuild the model. ``model`` is ``{"name", "config"}`` for a model of
  :mod:`onelip.models`, or ``{"name": "custom", "architecture", "input_shape"?}`` for any
  network built from ``onelip.nn`` and ``torch.nn`` layers (the module tree of
  :mod:`onelip.arch`: types, constructor arguments, children; no pickle). ``integrity`` holds
  the SHA-256 of ``model.safetensors`` and of the model section (canonical JSON);
* ``metrics.json`` — training history and final accuracies (``onelip train``);
* ``checkpoint.safetensors`` — the training state after the last epoch (``onelip train``): model,
  optimiser and schedule state, generators, epoch and history (:func:`write_checkpoint`), from
  which ``onelip train --resume RUN --epochs N`` (or ``fit(..., resume_from=RUN)``) continues;
* ``certify.json`` — certification results (``onelip certify``).

A folder is recognised as a run folder by what it holds: ``config.json`` with an
``onelip_version`` and ``model.safetensors`` (:func:`is_run_folder`). A run is written into a
temporary folder beside its target and renamed into place when complete (:func:`new_run`);
replacing a run (``overwrite=True``) moves the old one aside and deletes it only once the new
one is in place, so a crash at any point leaves the old run or the new one, never a mix.

A run that may be resumed (``onelip train``) is written into a fixed folder beside its target,
``.NAME.partial`` (:func:`partial_path`, :func:`resumable_run`), holding a checkpoint after each
epoch; a killed run leaves it behind for ``onelip train --resume NAME``.

Every file is written in a temporary folder beside it (``.onelip-tmp-NAME.XXXXXXXX/``,
:func:`onelip._io.atomic_path`) and renamed into place when complete. A kill in the middle of
a write leaves that folder: :func:`leftovers` recognises onelip's own (and only those), a
resumed run drops them before it continues and again before it is renamed into place, and a
run holding some is still replaced by ``overwrite`` (they are not a user's files). A full
disk is a one-line error naming the file (:func:`onelip._io.write_error`).

One process writes a run at a time: :func:`new_run` and :func:`resumable_run` hold the lock
file ``.NAME.lock`` beside it (:func:`lock_path`: created exclusively, it records the pid, host
and start of its process, and is removed when the run is in place). A second writer of the
same run is refused with the first one named (:func:`check_target` already says so); a lock
left by a process that no longer runs (killed) is taken over.

Checkpoints (:func:`write_checkpoint`, :func:`read_checkpoint`) are one safetensors file: every
tensor of a nested state (model and optimiser state dicts, generator states) is a tensor of the
file, everything else (numbers, strings, the history) is JSON in its metadata, with tags that
keep tuples, integer keys and non-finite floats as they were, and a SHA-256 of the tensors. No
pickle: a checkpoint cannot run code when it is read.

:func:`load` verifies both digests and names the file that changed. The digests detect
corruption and edits, not forgery (whoever can write the files can rewrite the digests). Runs
written before digests were recorded load without verification.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from onelip import __version__, arch, models
from onelip._errors import Argument, CheckpointError, OutputError
from onelip._io import (
    WriteError,
    _umask,
    atomic_path,
    check_state_dict,
    file_sha256,
    is_leftover,
    json_sha256,
    read_safetensors,
    unwritable_reason,
    write_json,
)

__all__ = ["CHECKPOINT", "CONFIG", "CUSTOM", "CheckpointError", "OutputError", "WEIGHTS",
           "check_target", "discard_partial", "enclosing_run", "is_run_folder", "leftovers",
           "load", "load_config", "lock_path", "new_run",
           "partial_path", "read_checkpoint", "resumable_run", "save", "write_checkpoint",
           "write_json", "write_model"]

READS_VERSIONS = frozenset({("0", "1"), ("0", "2"), ("0", "3")})
"""The (major, minor) versions whose run folders this version loads: 0.3 reads what 0.1 and
0.2 wrote (their state dicts lack only the layers' optional ``_extra_state``)."""

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
"""The training state of a run (after its last finished epoch)."""
RUN_FILES = frozenset({WEIGHTS, CONFIG, CHECKPOINT, "metrics.json", "certify.json"})
"""The files a run folder may hold (``onelip train`` and ``onelip certify`` write them): a
folder holding any other is never replaced."""
_STATE_FORMAT = "onelip-train-state/1"
# The arguments the messages of check_target, new_run and resumable_run tell the user to change
# (a front end spells them its own way: onelip train's --out, --force).
_PATH = Argument("path")
_OVERWRITE = Argument("overwrite", "overwrite=True")
CUSTOM = "custom"
"""``model.name`` of a run whose network is described by its module tree."""
_DIGEST_KEY = "model_sha256"  # in the safetensors metadata: the digest of the model section


# ==== where a run may be written ============================================================


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``config.json`` (a JSON object with an
    ``onelip_version``) and ``model.safetensors``: a run folder written by onelip."""
    path = Path(path)
    if not (path.is_dir() and (path / WEIGHTS).is_file() and (path / CONFIG).is_file()):
        return False
    try:
        cfg = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "onelip_version" in cfg


def leftovers(folder: str | Path) -> list[Path]:
    """What a killed onelip write left in ``folder``: the temporary folders and files of the
    files a run holds (:data:`RUN_FILES`, :func:`onelip._io.is_leftover`), never a user's
    file; sorted. [] when ``folder`` is not a folder."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(e for e in folder.iterdir() if not e.is_symlink() and (
        is_leftover(e.name, RUN_FILES, folder=True) if e.is_dir()
        else e.is_file() and is_leftover(e.name, RUN_FILES)))


def _drop_leftovers(folder: Path) -> None:
    for e in leftovers(folder):
        if e.is_dir():
            shutil.rmtree(e, ignore_errors=True)
        else:
            e.unlink(missing_ok=True)


def _is_partial(folder: Path) -> bool:
    return folder.name.startswith(".") and folder.name.endswith(".partial") and folder.is_dir()


def enclosing_run(path: str | Path) -> Path | None:
    """The run folder (or unfinished run, :func:`partial_path`) that ``path`` is or lies in,
    found after resolving symbolic links and ``..``; None when it lies in none. Whatever
    writes files for the user (``onelip export --out``) refuses such a path: a run folder
    holds only what a run writes, and its own files are never replaced from outside."""
    real = Path(os.path.abspath(path)).resolve()
    for folder in (real, *real.parents):
        if is_run_folder(folder) or _is_partial(folder):
            return folder
    return None


def check_target(path: str | Path, *, overwrite: bool = False) -> Path:
    """Raise :class:`~onelip._errors.OutputError` unless a run can be written at ``path``;
    returns ``path``.

    ``path`` may be missing (its parents are created) or an empty folder; an existing run
    folder only with ``overwrite``. Never the current folder or one above it, a file, a
    symbolic link, or a folder that is not a run folder (or holds sub-folders, or files that
    no run writes: :data:`RUN_FILES`; onelip's own :func:`leftovers` do not count), whatever
    ``overwrite``; nor a run another process is writing (its :func:`lock_path`); and the
    folder it goes in must be writable (probed). The messages name
    the arguments ``path`` and ``overwrite`` as :class:`~onelip._errors.Argument` parts
    (``onelip train`` shows ``--out``, ``--force``).
    """
    path = Path(path)
    full = Path(os.path.abspath(path))
    cwd, real = Path.cwd().resolve(), path.resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f"{path} is the current folder or a folder above it; a run needs a "
                          "folder of its own: choose another ", _PATH, ", e.g. runs/NAME")
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; give the folder it points to as ", _PATH)
    lock = lock_path(path)
    holder, raw = _read_lock(lock)
    if raw is not None and _alive(lock, holder) and not _is_this_process(holder):
        raise _busy(path, lock, holder)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path} is a file, not a run folder; choose another ", _PATH)
        own = set(leftovers(path))
        entries = [e for e in path.iterdir() if e not in own]
        if entries:
            if not is_run_folder(path):
                raise OutputError(
                    f"{path} exists and is not a onelip run folder (no config.json with an "
                    "onelip_version and model.safetensors)",
                    *(("; ", _OVERWRITE, " replaces only run folders") if overwrite else ()),
                    ": choose another ", _PATH)
            folders = sorted(e.name for e in entries if e.is_dir())
            if folders:
                raise OutputError(f"{path} holds folders that no run writes "
                                  f"({', '.join(folders[:3])}); move them or choose another ",
                                  _PATH)
            others = sorted(e.name for e in entries if e.name not in RUN_FILES)
            if others:  # a user's file saved in the run: replacing the run would delete it
                raise OutputError(f"{path} holds files that no run writes "
                                  f"({', '.join(others[:3])}"
                                  f"{', ...' if len(others) > 3 else ''}); move them or "
                                  "choose another ", _PATH)
            if not overwrite:
                raise OutputError(f"{path} already exists; choose another ", _PATH,
                                  " or pass ", _OVERWRITE, " to overwrite it")
    reason = unwritable_reason(full.parent)
    if reason is not None:
        raise OutputError(f"cannot write a run at {path}: {reason}")
    return path


@contextmanager
def new_run(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; when the block succeeds it becomes ``path``.

    ``path`` is checked first (:func:`check_target`) and again before the rename. If the
    block fails, the temporary folder is removed and ``path`` is as it was. An existing run
    (``overwrite=True``) is moved aside, the new one renamed into place, and only then the
    old one deleted. If ``path`` changed meanwhile so that it may not be replaced, the new
    run is kept in the temporary folder, which the error names.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with new_run(d / "run") as tmp:
        ...     _ = (tmp / "notes.txt").write_text("hello")
        >>> (d / "run" / "notes.txt").read_text()
        'hello'
    """
    path = Path(path)
    check_target(path, overwrite=overwrite)
    full = Path(os.path.abspath(path))
    full.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        tmp = Path(tempfile.mkdtemp(dir=full.parent, prefix=f".{full.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            with _finished_into(tmp, path, keep=lambda: False, overwrite=overwrite):
                yield tmp
        except WriteError as e:  # named where the file goes, not in the temporary folder
            if not e.path.is_relative_to(tmp):
                raise
            raise WriteError(path / e.path.relative_to(tmp), e.reason, e.errno) from None


@contextmanager
def _finished_into(tmp: Path, path: Path, *, keep: Callable[[], bool], **target) -> Iterator[None]:
    """Around the block that writes the run ``tmp``: on success re-check ``path``
    (:func:`check_target` with ``target``: it may have appeared meanwhile) and move ``tmp``
    onto it; on failure remove ``tmp`` unless ``keep()``. If ``path`` may no longer be
    replaced, the finished run stays in ``tmp`` and the error names it."""
    try:
        yield
        try:
            check_target(path, **target)
        except OutputError as e:
            raise _Kept(*e.parts, f"; the new run is kept in {tmp}") from None
        _drop_leftovers(tmp)  # of a write killed before a resume: never in a finished run
        _commit(tmp, Path(os.path.abspath(path)))
    except _Kept:
        raise
    except BaseException:
        if not keep():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Kept(OutputError):
    """The finished run could not be moved into place and was kept where it is."""


def _commit(tmp: Path, target: Path) -> None:
    _drop_leftovers(target)
    if not target.exists() or not any(target.iterdir()):
        os.replace(tmp, target)  # onto a missing name or an empty folder: atomic
        return
    aside = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def partial_path(path: str | Path) -> Path:
    """Where the run ``path`` is written while it trains: ``.NAME.partial`` beside it."""
    full = Path(os.path.abspath(path))
    return full.with_name(f".{full.name}.partial")


def discard_partial(path: str | Path) -> None:
    """Delete the unfinished run of ``path`` (its :func:`partial_path`), if any."""
    shutil.rmtree(partial_path(path), ignore_errors=True)


@contextmanager
def resumable_run(path: str | Path, *, overwrite: bool = False,
                  resume: bool = False) -> Iterator[Path]:
    """:func:`new_run` for a run that may be killed and resumed: yield the fixed folder
    :func:`partial_path` of ``path`` (created, or the existing one with ``resume``); when the
    block succeeds it becomes ``path`` (an existing run replaced only with ``overwrite``).

    If the block fails once the folder holds a :data:`CHECKPOINT`, the folder is kept, so the
    run can be resumed (``onelip train --resume``; :func:`discard_partial` drops it); before
    that it is removed and ``path`` is as it was. Without ``resume`` an existing unfinished run
    of ``path`` (one with a checkpoint) is an error unless ``overwrite`` (then it is
    discarded); one killed before its first checkpoint is replaced.
    """
    path = Path(path)
    check_target(path, overwrite=overwrite)
    tmp = partial_path(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):  # before the unfinished run is touched: it may be another's
        if tmp.is_symlink() or (tmp.exists() and not tmp.is_dir()):
            raise OutputError(f"{tmp} is in the way of the run {path} (not a folder); move it")
        if tmp.is_dir() and not (tmp / CHECKPOINT).is_file():
            shutil.rmtree(tmp)  # killed before its first checkpoint: nothing to resume
        if tmp.exists() and not resume:
            if not overwrite:
                raise OutputError(f"an unfinished run of {path} is in {tmp}; resume it with ",
                                  Argument("resume", "resume=True", value=path), " or pass ",
                                  _OVERWRITE, " to start over")
            shutil.rmtree(tmp)
        if not tmp.exists():
            tmp.mkdir()
            os.chmod(tmp, 0o777 & ~_umask())
        _drop_leftovers(tmp)  # a write killed in the middle: its checkpoint is the one before
        with _finished_into(tmp, path, keep=lambda: (tmp / CHECKPOINT).is_file(),
                            overwrite=overwrite):
            yield tmp


# ==== one writer a run ======================================================================


def lock_path(path: str | Path) -> Path:
    """The lock file of the run ``path`` while a process writes it: ``.NAME.lock`` beside it
    (a JSON record of the writer: ``pid``, ``host``, ``start``, ``since``, ``command``)."""
    full = Path(os.path.abspath(path))
    return full.with_name(f".{full.name}.lock")


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), None where unknown:
    a later process given the same pid started at another time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[19] if len(fields) > 19 else None


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "start": _process_start(os.getpid()), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(os.path.basename(a) if i == 0 else a
                                for i, a in enumerate(sys.argv))[:200]}


def _read_lock(lock: Path) -> tuple[dict | None, bytes | None]:
    """(the writer's record, or None when unreadable; the raw bytes, None when no lock)."""
    try:
        raw = lock.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError:
        return None, b""
    try:
        record = json.loads(raw)
    except ValueError:
        return None, raw
    return (record if isinstance(record, dict) else None), raw


_STARTING_S = 10.0  # an unreadable lock this young is a writer between creating and writing it


def _alive(lock: Path, holder: dict | None) -> bool:
    """Whether the writer of ``lock`` may still run: one on another host always (it cannot
    be checked); here while its pid runs and started when the record says."""
    if holder is None:  # unreadable: being written now, or left by a writer killed then
        try:
            return time.time() - lock.stat().st_mtime < _STARTING_S
        except OSError:
            return False
    if holder.get("host") != socket.gethostname() or os.name == "nt":
        return True  # (on Windows os.kill(pid, 0) would stop the process)
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        pass
    start, now = holder.get("start"), _process_start(pid)
    return start is None or now is None or start == now


def _is_this_process(holder: dict | None) -> bool:
    return (holder is not None and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
            and holder.get("start") == _process_start(os.getpid()))


def _busy(path: Path, lock: Path, holder: dict | None) -> OutputError:
    if holder is None:
        who = "a process that is starting"
    elif _is_this_process(holder):
        return OutputError(f"{path} is already being written by this process (pid "
                           f"{os.getpid()}); write each run once at a time, or choose "
                           "another ", _PATH)
    else:
        command = f", `{holder['command']}`" if holder.get("command") else ""
        since = f", since {holder['since']}" if holder.get("since") else ""
        who = f"pid {holder.get('pid')} on {holder.get('host')}{since}{command}"
    return OutputError(f"{path} is being written by another process ({who}); wait until it "
                       "ends or choose another ", _PATH, f" (if no such process runs any more, "
                       f"delete its lock {lock})")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the lock of the run ``path`` (:func:`lock_path`) around the block: created
    exclusively (``O_EXCL``); a live writer's lock is an :class:`OutputError` naming it, a
    dead one's is taken over. Removed after the block unless another took it meanwhile."""
    lock = lock_path(path)
    mine = json.dumps(_this_process()).encode()
    for _ in range(8):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder, raw = _read_lock(lock)
            if raw is None:
                continue  # released meanwhile
            if _alive(lock, holder):
                raise _busy(path, lock, holder) from None
            _take_over(lock, raw)
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(mine)
        break
    else:
        raise OutputError(f"cannot take the lock {lock} of {path}: other processes keep "
                          "taking it; retry, or choose another ", _PATH)
    try:
        yield
    finally:
        if _read_lock(lock)[1] == mine:
            lock.unlink(missing_ok=True)


def _take_over(lock: Path, stale: bytes) -> None:
    """Remove the lock ``stale`` of a writer that no longer runs; if another process took the
    lock meanwhile (the file moved aside is not ``stale``), put theirs back."""
    aside = lock.with_name(f"{lock.name}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_bytes() != stale:
            try:
                os.link(aside, lock)
            except OSError:
                pass
    finally:
        aside.unlink(missing_ok=True)


# ==== training checkpoints ==================================================================


def _pack(obj: Any, where: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of ``obj`` with every tensor moved to ``tensors`` (named by its
    path); tuples, dicts with keys other than strings and non-finite floats are tagged."""
    if isinstance(obj, torch.Tensor):
        tensors[where] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": where}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, f"{where}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, f"{where}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _pack(v, f"{where}/{k}", tensors) for k, v in obj.items()}
        return {"__dict__": [[_pack(k, f"{where}/k{i}", tensors),
                              _pack(v, f"{where}/{k}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    raise TypeError(f"cannot store {type(obj).__name__} at {where} in a checkpoint (tensors, "
                    "numbers, strings, lists, tuples and dicts only)")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__float__":
            return float(value)
        if tag == "__tuple__":
            return tuple(_unpack(v, tensors) for v in value)
        if tag == "__dict__":
            return {_unpack(k, tensors): _unpack(v, tensors) for k, v in value}
    return {k: _unpack(v, tensors) for k, v in obj.items()}


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_checkpoint(folder: str | Path, state: dict) -> Path:
    """Write the nested ``state`` (tensors, numbers, strings, lists, tuples, dicts) as
    ``folder/checkpoint.safetensors``, atomically (one file: a kill at any point leaves the
    previous checkpoint or this one); returns its path."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    packed = _pack(state, "state", tensors)
    meta = {"format": _STATE_FORMAT, "onelip_version": __version__,
            "state": json.dumps(packed, allow_nan=False),
            "tensors_sha256": _tensors_sha256(tensors)}
    target = Path(folder) / CHECKPOINT
    try:
        with atomic_path(target, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except OutputError as e:  # a full disk: the checkpoint before is still whole
        if target.is_file():
            raise OutputError(*e.parts, f" (the last checkpoint, {target}, is kept)") from None
        raise
    return target


def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict:
    """The state written by :func:`write_checkpoint`; ``path`` is the file or a folder holding
    one (a run folder or an unfinished run).

    Raises:
        CheckpointError: no checkpoint there, an unreadable or foreign file, or tensors that
            changed since they were written (SHA-256).
    """
    path = Path(path)
    file = path / CHECKPOINT if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"no training checkpoint at {path} (expected {file}); runs "
                              "written by `onelip train` hold one")
    tensors, meta = read_safetensors(file, map_location=map_location,
                                     hint="the checkpoint is corrupt")
    if meta.get("format") != _STATE_FORMAT:
        raise CheckpointError(f"{file} is not a onelip training checkpoint (format "
                              f"{meta.get('format')!r}, expected {_STATE_FORMAT!r})")
    if meta.get("tensors_sha256") != _tensors_sha256(
            {k: v.cpu() for k, v in tensors.items()}):
        raise CheckpointError(f"{file} changed since it was written: its tensors no longer "
                              "match their SHA-256 digest; restore it or retrain")
    try:
        return _unpack(json.loads(meta["state"]), tensors)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{file}: its training state is unreadable ({e})") from None


# ==== writing ===============================================================================


def _model_section(model: nn.Module, model_name: str | None, model_config: Any,
                   input_shape: Sequence[int] | None) -> dict:
    if model_name is not None:
        if model_config is None:
            raise TypeError(f"model_name={model_name!r} needs its model_config (the dataclass "
                            "from onelip.models.build)")
        try:
            section = {"name": model_name, "config": models.config_dict(model_config)}
        except TypeError:
            raise TypeError(f"model_config must be the dataclass onelip.models.build returned "
                            f"with the model, not {type(model_config).__name__}") from None
    elif model_config is not None:
        raise TypeError("model_config needs its model_name")
    else:
        try:
            section = {"name": CUSTOM, "architecture": arch.describe(model)}
        except TypeError as e:
            raise TypeError(f"{e}; a run folder can hold networks built from onelip.nn and "
                            "torch.nn layers") from None
    if input_shape is not None:
        section["input_shape"] = [int(s) for s in input_shape]
    return section


def write_model(folder: str | Path, model: nn.Module, *, model_name: str | None = None,
                model_config: Any = None, input_shape: Sequence[int] | None = None,
                extra: dict | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` (with their digests) into an existing
    ``folder``, each file atomically. :func:`save` is this inside :func:`new_run`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    section = _model_section(model, model_name, model_config, input_shape)
    model_digest = json_sha256(section)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"onelip_version": __version__,
                                             _DIGEST_KEY: model_digest})
        weights_digest = file_sha256(tmp)
    cfg = {
        "onelip_version": __version__,
        "model": section,
        "integrity": {"algorithm": "sha256", WEIGHTS: weights_digest, "model": model_digest},
        **(extra or {}),
    }
    write_json(folder / CONFIG, cfg)


def save(model: nn.Module, path: str | Path, *, model_name: str | None = None,
         model_config: Any = None, input_shape: Sequence[int] | None = None,
         extra: dict | None = None, overwrite: bool = False) -> Path:
    """Write the run folder ``path``: ``model.safetensors`` and ``config.json``; returns it.

    Args:
        model: a model of :mod:`onelip.models` (give ``model_name`` and ``model_config``, the
            dataclass :func:`onelip.models.build` returned) or any network built from
            ``onelip.nn`` and ``torch.nn`` layers (leave both out: its module tree is stored).
        input_shape: the shape of one input sample, recorded for export (optional).
        extra: more top-level entries of ``config.json`` (``data``, ``loss``, ``train``, ...).
        overwrite: replace an existing run folder (never any other folder).

    Raises:
        OutputError: ``path`` is not a place a run may be written (:func:`check_target`).
        TypeError: a network that cannot be described (a layer of another package, or a
            onelip layer whose constructor arguments are not stored).
    """
    with new_run(path, overwrite=overwrite) as tmp:
        write_model(tmp, model, model_name=model_name, model_config=model_config,
                    input_shape=input_shape, extra=extra)
    return Path(path)


# ==== loading ===============================================================================


def load_config(path: str | Path) -> dict:
    """The ``config.json`` of run folder ``path``, checked for shape and version (not for its
    digests: :func:`load` verifies those)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No run folder at {path}; ",
                              Argument("train_run", "train one and write it there "
                                       "(onelip.runs.write_model)", value=path))
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a run folder (expected a directory)")
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        raise CheckpointError(f"{cfg_path} is missing; is {path} a run folder written by onelip?")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the run folder is corrupt")
    if (not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict)
            or "name" not in cfg["model"]):
        raise CheckpointError(f"{cfg_path} has no model section; the run folder is corrupt")
    version = cfg.get("onelip_version")
    if not isinstance(version, str) or tuple(version.split(".")[:2]) not in READS_VERSIONS:
        raise CheckpointError(
            f"{path} was written by onelip {version}, this is onelip {__version__}; "
            "load it with that version or retrain"
        )
    _check_fields(cfg_path, cfg)
    return cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_shape(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(s) and s > 0 for s in v)


def _is_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


_SECTIONS = ("model", "data", "splits", "loss", "train", "integrity")
"""The sections of config.json that are objects (where present)."""
_FIELDS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("model", "name"): (lambda v: isinstance(v, str), "a model name"),
    ("model", "config"): (lambda v: isinstance(v, dict), "an object"),
    ("model", "input_shape"): (_is_shape, "a shape (a list of positive integers)"),
    ("data", "name"): (lambda v: isinstance(v, str), "a data set name"),
    ("data", "resize"): (lambda v: v is None or (_is_shape(v) and len(v) == 2),
                         "[height, width]"),
    ("data", "n_samples"): (lambda v: v is None or (_is_int(v) and v > 0), "a count"),
    ("splits", "val_fraction"): (_is_fraction, "a fraction in [0, 1)"),
    ("splits", "val_seed"): (_is_int, "an integer"),
    ("splits", "num_classes"): (lambda v: _is_int(v) and v > 0, "a count"),
    ("splits", "n_train"): (lambda v: _is_int(v) and v >= 0, "a count"),
    ("splits", "n_val"): (lambda v: _is_int(v) and v >= 0, "a count"),
    ("splits", "n_test"): (lambda v: _is_int(v) and v >= 0, "a count"),
    ("splits", "classes"): (lambda v: isinstance(v, list) and all(isinstance(c, str)
                                                                   for c in v),
                            "a list of class names"),
    ("splits", "input_shape"): (_is_shape, "a shape (a list of positive integers)"),
    ("splits", "source"): (lambda v: v is None or isinstance(v, str), "a path"),
    ("splits", "fingerprint"): (lambda v: v is None or isinstance(v, dict), "an object"),
    ("train", "val_fraction"): (_is_fraction, "a fraction in [0, 1)"),
}
"""Fields of config.json that onelip reads (where present) -> (the check, what it must be)."""


def _check_fields(cfg_path: Path, cfg: dict) -> None:
    """A :class:`CheckpointError` naming the file and the field for a section or field of
    ``cfg`` that is not what onelip writes (an edited or corrupt config.json). Only the model
    section is covered by a digest (:func:`load`): the others are checked here, so that no
    edit turns into an error far from the file."""
    def bad(where: str, value: Any, what: str) -> CheckpointError:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return CheckpointError(f"{cfg_path}: {where} is not {what} ({shown}); the file was "
                               "edited or is corrupt: restore it from a backup or retrain")

    for section in _SECTIONS:
        if section in cfg and not isinstance(cfg[section], dict):
            raise bad(f"the {section} section", cfg[section], "an object")
    for (section, field), (ok, what) in _FIELDS.items():
        part = cfg.get(section, {})
        if field in part and not ok(part[field]):
            raise bad(f"{section}.{field}", part[field], what)


def _build(path: Path, section: dict) -> nn.Module:
    try:
        if "architecture" in section:
            return arch.build(section["architecture"])
        return models.build(section["name"], **section.get("config", {}))[0]
    except CheckpointError as e:
        raise CheckpointError(f"{path / CONFIG}: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} describes a model onelip cannot build: {e}")


def _verify(path: Path, cfg: dict, weights_meta: dict) -> None:
    """Compare the digests recorded at writing with the files' (see the module docstring)."""
    wpath, cpath = path / WEIGHTS, path / CONFIG
    record = cfg.get("integrity")
    model_digest = json_sha256(cfg["model"])
    if record is None:
        if _DIGEST_KEY in weights_meta:
            raise CheckpointError(f"{cpath} changed since the run was written: its integrity "
                                  f"record was removed ({WEIGHTS} was written with one); "
                                  "restore config.json or retrain")
        return  # a run written before digests were recorded: nothing to verify
    if not isinstance(record, dict) or record.get("algorithm") != "sha256":
        raise CheckpointError(f"{cpath} changed since the run was written: its integrity "
                              "record is unreadable; restore config.json or retrain")
    if record.get("model") != model_digest:
        raise CheckpointError(f"{cpath} changed since the run was written: its model section "
                              "no longer matches its SHA-256 digest (the network it describes "
                              "is not the one trained); restore config.json or retrain")
    if record.get(WEIGHTS) != file_sha256(wpath):
        raise CheckpointError(f"{wpath} changed since the run was written: its SHA-256 digest "
                              f"differs from the one in {CONFIG}; restore it from a backup or "
                              "retrain")


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of run folder ``path`` and load its weights; returns (model, config).

    The digests recorded at writing (``config.json``'s ``integrity``) are verified: an edited
    model section of ``config.json`` or a changed ``model.safetensors`` is an error naming the
    file. Run folders written before digests were recorded (no ``integrity`` entry, none in
    the weights' metadata) load without this verification.

    Raises:
        CheckpointError: missing folder or files, corrupt safetensors or JSON, another onelip
            version, missing/unexpected keys or other shapes, a file changed since it was
            written — with what to do about it.
    """
    path = Path(path)
    cfg = load_config(path)
    model = _build(path, cfg["model"])
    wpath = path / WEIGHTS
    if not wpath.exists():
        raise CheckpointError(f"{wpath} is missing; the run did not finish or was moved")
    state, meta = read_safetensors(wpath, map_location=map_location,
                                   hint="retrain or restore it from a backup")
    check_state_dict(state, model.state_dict(), source=wpath,
                     architecture=f"the architecture in {CONFIG}")
    _verify(path, cfg, meta)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, cfg
