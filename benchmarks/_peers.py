# SPDX-License-Identifier: MIT
"""The peers' virtual environment (deel-torchlip, orthogonium, torch pinned) and the re-exec
that lets one benchmark process import onelip *and* the peers. Shared by the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEERS_VENV = REPO / "benchmarks" / ".peers-venv"
TORCH_PIN = "2.13.0"
# onelip (from src/) runs in the same process: its own runtime dependencies come along.
PEER_REQUIREMENTS = [f"torch=={TORCH_PIN}", "numpy", "safetensors", "rich", "Pillow",
                     "scikit-learn", "deel-torchlip", "orthogonium"]
REEXEC_FLAG = "ONELIP_BENCH_IN_PEERS_VENV"


def peers_importable() -> bool:
    try:
        import deel.torchlip  # noqa: F401
        import orthogonium  # noqa: F401
    except ImportError:
        return False
    return True


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_ready(py: Path) -> bool:
    if not py.exists():
        return False
    # what the benchmarks import there: a venv missing one (safetensors to save, Pillow to
    # decode) is completed by ensure_peers_venv, not found broken after a 20-minute run
    probe = ("import torch, numpy, safetensors, PIL, deel.torchlip, orthogonium, sys; "
             f"sys.exit(0 if torch.__version__.split('+')[0] == {TORCH_PIN!r} else 3)")
    # cwd=REPO: a stray deel.py in the caller's directory must not shadow the package.
    return subprocess.run([str(py), "-c", probe], cwd=REPO, capture_output=True).returncode == 0


def ensure_peers_venv(venv: Path) -> Path:
    """Create ``venv`` with torch pinned, numpy and the peers from PyPI if it lacks them."""
    py = venv_python(venv)
    if venv_ready(py):
        return py
    if not py.exists():
        print(f"[bench] creating the peers' environment {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(f"[bench] pip install {' '.join(PEER_REQUIREMENTS)} into {venv}", flush=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True,
                   cwd=REPO)
    if not venv_ready(py):
        raise SystemExit(f"[bench] {venv} still cannot import torch=={TORCH_PIN}, numpy, "
                         "safetensors, PIL, deel.torchlip and orthogonium; remove it and retry")
    return py


def reexec_in_peers_venv(venv: Path, script: str) -> None:
    """Re-run ``script`` with the current arguments inside ``venv`` (does not return)."""
    if os.environ.get(REEXEC_FLAG):
        raise SystemExit(f"[bench] re-executed in {sys.executable}, which still cannot import "
                         "deel.torchlip and orthogonium")
    py = ensure_peers_venv(venv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), str(REPO / "benchmarks")]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env[REEXEC_FLAG] = "1"
    print(f"[bench] re-executing in {py}", flush=True)
    os.chdir(REPO)
    os.execve(str(py), [str(py), str(Path(script).resolve()), *sys.argv[1:]], env)


def import_working_tree_onelip(*, need_peers: bool = True, script: str, venv: Path):
    """Make this process import the working tree's onelip (``src/``) and, if ``need_peers``,
    the peers, re-executing ``script`` inside ``venv`` when they are missing. Prints where each
    came from; exits if onelip would come from elsewhere. Returns the onelip module."""
    if need_peers and not peers_importable():
        reexec_in_peers_venv(venv.resolve(), script)  # does not return
    sys.path.insert(0, str(REPO / "src"))
    import onelip

    mods = [onelip]
    if need_peers:
        import deel.torchlip

        mods.append(deel.torchlip)
    for mod in mods:
        print(f"[bench] {mod.__name__} from {Path(mod.__file__).parent}", flush=True)
    if Path(onelip.__file__).resolve().parents[1] != REPO / "src":
        raise SystemExit(f"[bench] onelip imported from {onelip.__file__}, not {REPO / 'src'}")
    return onelip
