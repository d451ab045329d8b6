"""Tools the model can call: the @tool registry, the dispatcher that runs calls, built-in tools."""

from glmrun.tools.registry import Tool, ToolRegistry, tool

__all__ = ["Tool", "ToolRegistry", "tool"]
