"""How the code interpreter's Jupyter kernel is confined, and what is and is not enforced.

Threat model: the code comes from the model (untrusted). Layers, each used when the machine has it:
- resource limits (`prlimit`): address space, CPU seconds, processes, file size, open files;
- bubblewrap (`bwrap`): read-only root file system, a private /tmp, the working folder as the only writable
  place (mounted at /mnt/data, where ChatGLM3's code-interpreter prompt says files are), no network (a private
  network namespace without even loopback to the host), a private PID space, killed with its parent;
- `setpriv`: the kernel runs as the unprivileged user `nobody`, so the process limit applies to it and it can
  signal no process of ours;
- a scrubbed environment: the kernel sees none of the host process's variables (no API keys or tokens).
The kernel talks to glmrun over Unix sockets (jupyter_client's `ipc` transport) in a folder bound into the
sandbox, because a kernel without network cannot reach the host's loopback. Without bwrap there is no file
system or network isolation and without root no user switch: `SandboxReport` says what is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
SANDBOX_WORKDIR = "/mnt/data"


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 4 * 2**30  # address space of the kernel and its children
    cpu_seconds: int = 3600  # CPU time over the kernel's whole life (each cell also has a wall-clock timeout)
    processes: int = 64  # processes of the sandbox user (stops fork bombs)
    file_bytes: int = 256 * 2**20  # largest file the code may write
    open_files: int = 256


@dataclass(frozen=True)
class SandboxReport:
    enforced: list[str]
    missing: list[str]

    def describe(self) -> str:
        text = "enforced: " + ", ".join(self.enforced)
        return text + ("; NOT enforced: " + ", ".join(self.missing) if self.missing else "")


def kernel_environment(runtime_dir: Path, workdir: str) -> dict[str, str]:
    """The only variables the kernel gets: nothing of the host process's environment."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "IPYTHONDIR": str(runtime_dir / "ipython"),
        "MPLCONFIGDIR": str(runtime_dir / "matplotlib"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }


def python_paths_under(folder: str) -> list[str]:
    """The top-level entries of `folder` that hold the Python installation (venv, base install), which a private
    mount on `folder` would hide. Whole entries, so that their real permissions stay visible to the sandbox user
    (folders bubblewrap creates for a deeper mount point are readable by root only)."""
    paths = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent)}
    roots = set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved.is_relative_to(folder) and resolved != Path(folder):
            roots.add(str(Path(folder) / resolved.relative_to(folder).parts[0]))
    return sorted(roots)


def kernel_command(
    workdir: Path, session_dir: Path, runtime_dir: Path, limits: SandboxLimits, isolate: bool = True
) -> tuple[list[str], str, SandboxReport]:
    """The kernel's argv (with `{connection_file}` for jupyter_client), the working folder as the kernel sees it,
    and what is enforced. `runtime_dir` (sockets, connection file) lies inside `session_dir` and keeps its path in
    the sandbox. `isolate=False` runs the kernel unconfined (tests of glmrun itself, never for models)."""
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if not isolate:
        return kernel, str(workdir), SandboxReport([], ["everything (isolation switched off)"])
    enforced, missing, argv = [], [], []
    if shutil.which("prlimit"):
        argv += [
            "prlimit",
            f"--as={limits.memory_bytes}",
            f"--cpu={limits.cpu_seconds}",
            f"--nproc={limits.processes}",
            f"--fsize={limits.file_bytes}",
            f"--nofile={limits.open_files}",
            "--",
        ]
        enforced.append("memory, CPU, process, file-size limits")
    else:
        missing.append("resource limits (prlimit not found)")
    seen_workdir = str(workdir)
    if shutil.which("bwrap"):
        seen_workdir = SANDBOX_WORKDIR
        argv += [
            "bwrap",
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            *[flag for path in python_paths_under("/tmp") for flag in ("--ro-bind", path, path)],
            "--tmpfs", "/mnt",
            "--bind", str(workdir), SANDBOX_WORKDIR,
            "--ro-bind", str(session_dir), str(session_dir),
            "--bind", str(runtime_dir), str(runtime_dir),
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
            "--chdir", SANDBOX_WORKDIR,
            "--",
        ]  # fmt: skip
        # In its own PID space the kernel's parent is not glmrun, so it must not watch JPY_PARENT_PID (it would
        # think glmrun exited); --die-with-parent does that job instead.
        argv += ["env", "-u", "JPY_PARENT_PID"]
        enforced.append("read-only file system except the working folder, no network, private PID space")
    else:
        missing.append("file system and network isolation (bwrap not found: apt-get install bubblewrap)")
    if os.geteuid() == 0 and shutil.which("setpriv"):
        argv += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        enforced.append("runs as user nobody")
    else:
        missing.append("user switch (needs root and setpriv)")
    enforced.append("scrubbed environment")
    return argv + kernel, seen_workdir, SandboxReport(enforced, missing)


def hand_over(path: Path) -> None:
    """Let the sandbox user own a file or folder that the kernel must write (when glmrun runs as root)."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
