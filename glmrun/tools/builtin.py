"""A few tools that need no network: the current time, a calculator and a random number.

The calculator walks the expression's syntax tree and allows only numbers, arithmetic operators and a list of
math functions: no names, attributes or calls beyond those, and bounded exponents, so a model cannot use it to
run code or to hang the process.
"""

from __future__ import annotations

import ast
import math
import operator
import random
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from glmrun.tools.registry import Tool, tool

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS = {name: getattr(math, name) for name in ("sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan",
                                                     "asin", "acos", "atan", "floor", "ceil", "factorial")}  # fmt: skip
_FUNCTIONS |= {"abs": abs, "round": round}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents above {MAX_EXPONENT} are not allowed")
        result = _OPERATORS[type(node.op)](left, right)
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise ValueError("the result is too large")
        return result
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        arguments = [_evaluate(argument) for argument in node.args]
        if node.func.id == "factorial" and arguments and arguments[0] > 500:
            raise ValueError("factorial is limited to 500")
        return _FUNCTIONS[node.func.id](*arguments)
    raise ValueError(f"not allowed in a calculation: {ast.unparse(node)!r}")


@tool
def calculator(expression: Annotated[str, "an arithmetic expression, e.g. (2 + 3) * sqrt(16) / 7"]) -> float | int:
    """Evaluate an arithmetic expression exactly (numbers, + - * / // % **, parentheses, math functions)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as bad:
        raise ValueError(f"not an arithmetic expression: {bad.msg}") from None
    return _evaluate(tree.body)


@tool
def get_current_time(timezone: Annotated[str, "IANA time zone name, e.g. Asia/Shanghai"] = "UTC") -> str:
    """Get the current date and time in a time zone."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None
    return datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


@tool
def random_number(
    low: Annotated[int, "smallest possible value"] = 0, high: Annotated[int, "largest possible value"] = 100
) -> int:
    """Draw a uniformly random integer between low and high, both included."""
    if low > high:
        raise ValueError("low must not exceed high")
    return random.randint(low, high)


BUILTIN_TOOLS: list[Tool] = [get_current_time, calculator, random_number]
