"""The code interpreter: a sandboxed Jupyter kernel per session (kernel.py) and its confinement (sandbox.py)."""

from glmrun.interpreter.kernel import CodeInterpreter, ExecutionResult
from glmrun.interpreter.sandbox import SandboxLimits

__all__ = ["CodeInterpreter", "ExecutionResult", "SandboxLimits"]
