# SPDX-License-Identifier: MIT
"""Files written atomically and state dicts checked against a model (a leaf).

* :func:`atomic_path`: a context manager yielding a temporary path beside the target, renamed
  onto it only when the block succeeds (a crash leaves the old file as it was, and at worst a
  temporary folder named :data:`TEMP_PREFIX` ..., which :func:`is_leftover` recognises); a
  full disk is a one-line error naming the file (:func:`write_error`);
* :func:`write_json`: JSON through :func:`atomic_path`;
* :func:`unwritable_reason`: why files cannot be created in a folder (probed, nothing left);
* :func:`file_sha256` / :func:`json_sha256`: digests of a file and of a JSON value (canonical:
  sorted keys, no spaces), for the integrity records of run folders;
* :func:`check_state_dict`: the keys, shapes and finiteness of loaded tensors against the
  ``state_dict`` a model expects, with a message naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import torch

from onelip._errors import CheckpointError, OutputError

__all__ = ["TEMP_PREFIX", "atomic_path", "check_state_dict", "file_sha256", "is_leftover",
           "WriteError", "json_sha256", "read_safetensors", "unwritable_reason", "write_error",
           "write_json"]

TEMP_PREFIX = ".onelip-tmp-"
"""How the temporary folders of :func:`atomic_path` begin: ``.onelip-tmp-NAME.XXXXXXXX/``,
beside the file ``NAME`` that is written in it and then renamed into place. A process killed
while writing leaves that folder, with whatever the writer had made in it (safetensors' own
temporary file too); :func:`is_leftover` recognises it, so that run folders drop it (and never
a user's file)."""
_PROBE_PREFIX = ".onelip-probe-"
# Left by a killed write of the file NAME: the folder of atomic_path (the prefix, NAME,
# tempfile's 8 random characters); as onelip 0.3.0 left them, a file ".NAME.XXXXXXXX.SUFFIX"
# or safetensors' own ".tmpXXXXXX" (written beside the path it was given); a probe of
# unwritable_reason.
_LEFTOVER_DIR = re.compile(re.escape(TEMP_PREFIX) + r"(?P<target>.+)\.[a-z0-9_]{8}")
_LEFTOVER_FILE = re.compile(r"(?:\.onelip-tmp-|\.)(?P<target>.+)\.[a-z0-9_]{8}\.[A-Za-z0-9]{1,16}")
_OTHER_LEFTOVER = re.compile(r"\.tmp[A-Za-z0-9]{6}|" + re.escape(_PROBE_PREFIX) + r"[a-z0-9_]{8}")


def is_leftover(name: str, targets: Collection[str], *, folder: bool = False) -> bool:
    """Whether ``name`` (a folder's when ``folder``, else a file's) is one that onelip's own
    writers leave when killed while writing one of the files ``targets``: the temporary folder
    of :func:`atomic_path` (:data:`TEMP_PREFIX`), the temporary files onelip 0.3.0 left
    (``.NAME.XXXXXXXX.SUFFIX``, safetensors' ``.tmpXXXXXX``), a probe of
    :func:`unwritable_reason`. A user's file is never one (another name or another target).

    Example:
        >>> is_leftover(".onelip-tmp-config.json.k3x9_a2b", {"config.json"}, folder=True)
        True
        >>> is_leftover("notes.txt", {"config.json"}), is_leftover(".config.json", {"config.json"})
        (False, False)
    """
    if folder:
        m = _LEFTOVER_DIR.fullmatch(name)
        return m is not None and m.group("target") in targets
    if _OTHER_LEFTOVER.fullmatch(name):
        return True
    m = _LEFTOVER_FILE.fullmatch(name)
    return m is not None and m.group("target") in targets


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path for ``path``; on success it replaces ``path`` (``os.replace``:
    atomic on POSIX), on error it is removed and ``path`` is untouched. The path lies in a
    temporary folder of its own beside ``path`` (:data:`TEMP_PREFIX`), so that whatever a
    writer makes there (safetensors writes a temporary file of its own) goes with it, and a
    process killed meanwhile leaves one folder that :func:`is_leftover` knows. Its name is
    ``path``'s, ending in ``suffix`` (for writers that check it).

    An error of the file system while writing (a full disk, a folder that cannot be written:
    ``OSError``, or safetensors' ``SafetensorError`` of one) is an
    :class:`~onelip._errors.OutputError` naming ``path`` and saying what to do.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "a.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "a.txt").read_text()
        'hello'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}."))
    except OSError as e:
        raise write_error(path, e) from None
    tmp = folder / (path.name if path.name.endswith(suffix) else path.name + suffix)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as e:
        err = write_error(path, e) if not isinstance(e, WriteError) else None
        if err is None:
            raise
        raise err from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_OS_ERROR = re.compile(r"(?:os error|code:) (\d+)")
_WHAT_TO_DO = {errno.ENOSPC: "free space on its disk, or write elsewhere",
               errno.EDQUOT: "free space within your disk quota, or write elsewhere",
               errno.EACCES: "make its folder writable, or write elsewhere",
               errno.EPERM: "make its folder writable, or write elsewhere",
               errno.EROFS: "write elsewhere (a read-only file system)"}


class WriteError(OutputError, OSError):
    """A file that could not be written (:func:`write_error`): :attr:`path`, :attr:`reason`
    (what happened and what to do) and :attr:`errno`. An :class:`OSError` too, as the error
    it stands for was."""

    def __init__(self, path: str | Path, reason: str, code: int | None = None) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot write {path}: {reason}")
        self.errno = code


def write_error(path: str | Path, e: BaseException) -> WriteError | None:
    """The one-line :class:`WriteError` for ``e``, an error of the file system while writing
    ``path`` (an ``OSError``, or safetensors' ``SafetensorError`` of one): what happened (e.g.
    "No space left on device") and what to do; None for any other error."""
    if isinstance(e, OSError):
        code, why = e.errno, e.strerror or str(e)
    elif type(e).__name__ == "SafetensorError":
        m = _OS_ERROR.search(str(e))
        if m is None:
            return None
        code = int(m.group(1))
        why = os.strerror(code)
    else:
        return None
    todo = _WHAT_TO_DO.get(code, "check that place and retry, or write elsewhere")
    return WriteError(path, f"{why}; {todo}", code)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def unwritable_reason(folder: str | Path) -> str | None:
    """Why files cannot be created in ``folder`` (or, where it does not exist yet, why it
    cannot be created), or ``None`` when they can. Probes by creating and removing a temporary
    file in the nearest existing folder, so that read-only file systems, ``/proc`` and missing
    permissions are all seen (``os.access`` misses some when run as root); creates nothing.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=_PROBE_PREFIX)
    except OSError as e:
        return f"{probe} is not writable ({e.strerror or e})"
    os.close(fd)
    os.unlink(name)
    return None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def json_sha256(obj: Any) -> str:
    """The SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces, ASCII), in hex: the
    same for every writing of the same value."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def read_safetensors(path: str | Path, *, map_location: str | torch.device = "cpu",
                     hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, or a :class:`~onelip._errors.CheckpointError`
    naming the file (``hint``, e.g. "retrain", ends the message)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})"
                              + (f"; {hint}" if hint else "")) from None


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                     *, source: str | Path, architecture: str = "the architecture") -> None:
    """Raise :class:`~onelip._errors.CheckpointError` unless ``state`` has exactly the keys
    and shapes of ``expected`` and finite floating-point values.

    Args:
        state: the tensors read from ``source``.
        expected: ``model.state_dict()`` of the model they are for.
        source: the file they came from (named in the message).
        architecture: what ``expected`` was built from (named in the message).
    """
    # A layer's hidden training state (``*._extra_state``, e.g. OrthoLinear's certified
    # copies) is optional: files written before the layer saved it still load.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("_extra_state"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match {architecture}: missing keys "
                              f"{missing[:5]}, unexpected keys {unexpected[:5]}")
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{source} has other shapes than {architecture}: {bad[:5]}")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: tensor {k} contains NaN or inf; the weights are "
                                  "corrupt")
