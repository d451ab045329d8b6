"""Runs a parsed tool call: look the tool up, validate the arguments, run it under a time limit, and turn
whatever happens into an observation for the model. It never raises: unknown tools, invalid arguments,
exceptions and time-outs are all reported back to the model as JSON, and the conversation goes on.

The time limit stops waiting, not the tool: Python cannot kill a thread, so a tool that ignores its deadline
keeps running in the background (tools are the developer's code; only their arguments come from the model).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import pydantic

from glmrun.tools.registry import ToolRegistry


@dataclass(frozen=True)
class ToolResult:
    name: str
    arguments: dict[str, Any]
    observation: str  # what goes back to the model
    ok: bool


def to_observation(value: Any) -> str:
    """A tool's return value as observation text: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class Dispatcher:
    def __init__(self, registry: ToolRegistry, timeout: float = 30.0) -> None:
        self.registry, self.timeout = registry, timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="glmrun-tool")

    def _error(self, name: str, arguments: dict[str, Any], message: str) -> ToolResult:
        return ToolResult(name, arguments, to_observation({"error": message}), ok=False)

    def run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        item = self.registry.get(name)
        if item is None:
            known = ", ".join(self.registry.tools) or "none"
            return self._error(name, arguments, f"unknown tool {name!r}; available tools: {known}")
        try:
            validated = item.validate(arguments)
        except pydantic.ValidationError as bad:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in bad.errors())
            return self._error(name, arguments, f"invalid arguments: {problems}")
        future = self._pool.submit(item.function, **validated)
        try:
            value = future.result(timeout=self.timeout)
        except FutureTimeout:
            return self._error(name, arguments, f"the tool did not finish within {self.timeout:g} s")
        except Exception as failure:  # the tool's own error is the model's information, not ours to raise
            return self._error(name, arguments, f"{type(failure).__name__}: {failure}")
        return ToolResult(name, arguments, to_observation(value), ok=True)
