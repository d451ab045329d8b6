"""CodeInterpreter: one sandboxed Jupyter kernel per chat session, running the model's code blocks.

The kernel starts on the first `run` and stops with `close`. Each run collects stdout, stderr, results and
tracebacks as plain text (ANSI colours removed, cut to `output_limit` characters with a marker) and saves
images (`image/png` display data, e.g. matplotlib figures) as PNG files, announced to the model as `[Image]`.
A run that exceeds `timeout` is interrupted; a kernel that dies (os._exit, a memory or CPU limit) is restarted.
Either way the result says what happened and the next run works. Confinement is sandbox.py's job.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from glmrun.interpreter.sandbox import SandboxLimits, hand_over, kernel_command, kernel_environment

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
KERNEL_NAME = "glmrun-sandbox"


@dataclass
class ExecutionResult:
    output: str  # what the model is told (text, with [Image] for each image)
    images: list[Path] = field(default_factory=list)
    error: bool = False  # the code raised, timed out or killed the kernel
    timed_out: bool = False
    restarted: bool = False  # the kernel died or hung and was restarted: its variables are gone


class _Collector:
    """Output text of one execution, cut at a limit (later output is counted, not kept)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def add(self, text: str) -> None:
        text = _ANSI.sub("", text)
        room = self.limit - self.size
        self.parts.append(text[:room])
        self.size += min(len(text), max(room, 0))
        self.dropped += max(len(text) - room, 0)

    def text(self) -> str:
        joined = "".join(self.parts)
        if self.dropped:
            joined += f"\n[... output truncated: {self.dropped} more characters ...]"
        return joined


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from the host's /proc (namespaces do not hide them from it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # the field after the state, past "(comm)"
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = set(), [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


class CodeInterpreter:
    """A session's kernel. `workdir` (default: a temporary folder) is where code reads and writes files, seen as
    /mnt/data inside the sandbox; run as root, glmrun hands it to the sandbox user (chown nobody). `image_dir`
    receives the PNG files. Both outlive `close()` when you give them; the temporary ones are removed."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        image_dir: str | Path | None = None,
        timeout: float = 30.0,
        output_limit: int = 8000,
        limits: SandboxLimits | None = None,
        isolate: bool = True,
    ) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="glmrun-interpreter-"))
        self.workdir = Path(workdir) if workdir else self._root / "work"
        self.image_dir = Path(image_dir) if image_dir else self._root / "images"
        self.runtime_dir = self._root / "runtime"
        self.timeout, self.output_limit = timeout, output_limit
        self.limits = limits or SandboxLimits()
        self._manager: KernelManager | None = None
        self._client = None
        self._image_count = 0
        self._argv, self._seen_workdir, self.report = kernel_command(
            self.workdir, self._root, self.runtime_dir, self.limits, isolate
        )

    # -- kernel life cycle -------------------------------------------------------------------------------
    def _start(self) -> None:
        for folder in (self.workdir, self.image_dir, self.runtime_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._root.chmod(0o711)  # the sandbox user may pass through the session folder, not list it
        for folder in (self.workdir, self.runtime_dir):
            hand_over(folder)
        spec_dir = self._root / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {"argv": self._argv, "display_name": "glmrun sandbox", "language": "python", "interrupt_mode": "message"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        specs = KernelSpecManager(kernel_dirs=[str(self._root / "kernels")])
        manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs, transport="ipc")
        manager.ip = str(self.runtime_dir / "kernel")
        manager.connection_file = str(self.runtime_dir / "connection.json")
        manager.write_connection_file()
        hand_over(Path(manager.connection_file))  # the kernel (as nobody) must read it
        self._log = (self.runtime_dir / "kernel.log").open("ab")  # the kernel's console output, kept off ours
        environment = kernel_environment(self.runtime_dir, self._seen_workdir)
        manager.start_kernel(env=environment, cwd=str(self.workdir), stdout=self._log, stderr=self._log)
        self._manager = manager
        self._connect()

    def _connect(self) -> None:
        self._client = self._manager.client()
        self._client.start_channels()
        self._client.wait_for_ready(timeout=60)
        self._baseline_processes = len(self._sandbox_processes())

    def _sandbox_processes(self) -> set[int]:
        """The processes the kernel's launcher has below it (wrappers, the kernel, and whatever code started)."""
        return descendants(self._manager.provisioner.process.pid)

    def _restart(self) -> None:
        self._client.stop_channels()
        self._manager.restart_kernel(now=True)
        self._connect()

    def close(self) -> None:
        """Stop the kernel and remove the session's temporary folders (not a workdir or image_dir given by you)."""
        if self._manager is not None:
            self._client.stop_channels()
            self._manager.shutdown_kernel(now=True)
            self._manager = None
            self._log.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> CodeInterpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running code ------------------------------------------------------------------------------------
    def _save_image(self, data: str) -> Path:
        self._image_count += 1
        path = self.image_dir / f"image-{self._image_count:03d}.png"
        path.write_bytes(base64.b64decode(data))
        return path

    def run(self, code: str) -> ExecutionResult:
        """Execute one code block in the session's kernel (started on first use)."""
        if self._manager is None:
            self._start()
        message_id = self._client.execute(code, allow_stdin=False)
        collector, images = _Collector(self.output_limit), []
        result = ExecutionResult(output="")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                message = self._client.get_iopub_msg(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                if not self._manager.is_alive():
                    collector.add("\n[the Python kernel died (a memory or CPU limit, or the code exited it); it was "
                                  "restarted and its variables are lost]")  # fmt: skip
                    self._restart()
                    result.error = result.restarted = True
                    break
                if time.monotonic() >= deadline:
                    result.error = result.timed_out = True
                    result.restarted = not self._interrupt(message_id)
                    outcome = "restarted: variables are lost" if result.restarted else "interrupted"
                    collector.add(f"\n[execution timed out after {self.timeout:g} s and was {outcome}]")
                    break
                continue
            if message["parent_header"].get("msg_id") != message_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                collector.add(content["text"])
            elif kind in ("execute_result", "display_data"):
                if "image/png" in content["data"]:
                    images.append(self._save_image(content["data"]["image/png"]))
                    collector.add("[Image]\n")
                elif "text/plain" in content["data"]:
                    collector.add(content["data"]["text/plain"] + "\n")
            elif kind == "error":
                result.error = True
                collector.add("\n".join(content["traceback"]) + "\n")
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if result.error and not result.restarted and len(self._sandbox_processes()) > self._baseline_processes:
            # A failed cell left processes behind (a fork bomb, a hung child): only a restart clears them all.
            self._restart()
            result.restarted = True
            collector.add("\n[the code left processes running; the kernel was restarted and its variables are lost]")
        result.output, result.images = collector.text().strip("\n"), images
        return result

    def _interrupt(self, message_id: str) -> bool:
        """Interrupt the running cell; restart the kernel if it does not come back. True if interrupted."""
        self._manager.interrupt_kernel()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                message = self._client.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                continue
            idle = message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            if idle and message["parent_header"].get("msg_id") == message_id:  # the cell itself, not the request
                return True
        self._restart()
        return False
