"""@tool schemas, argument validation, the dispatcher's error handling, and the built-in tools."""

from __future__ import annotations

import json
import time
from typing import Annotated

import pytest

from glmrun import GlmrunError
from glmrun.tools import ToolRegistry, tool
from glmrun.tools.builtin import BUILTIN_TOOLS, calculator, get_current_time, random_number
from glmrun.tools.dispatcher import Dispatcher


@tool
def get_weather(city: Annotated[str, "city name, e.g. 北京"], days: int = 1, metric: bool = True) -> dict:
    """Get the weather forecast for a city.

    Longer notes that are not part of the description."""
    return {"city": city, "days": days, "metric": metric, "forecast": "sunny"}


def test_schema_from_signature_hints_and_docstring():
    assert get_weather.description_dict() == {
        "name": "get_weather",
        "description": "Get the weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "city name, e.g. 北京"},
                "days": {"type": "integer", "default": 1},
                "metric": {"type": "boolean", "default": True},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    }
    assert get_weather("Paris")["forecast"] == "sunny"  # still callable as a function


def test_decorator_options_and_registry():
    @tool(name="lookup", description="Look something up.")
    def search(query: str) -> str:
        return query

    registry = ToolRegistry([search, get_weather])
    assert [d["name"] for d in registry.descriptions()] == ["lookup", "get_weather"]
    with pytest.raises(GlmrunError, match="two tools"):
        registry.add(search)
    with pytest.raises(GlmrunError, match="not a tool"):
        registry.add(print)
    with pytest.raises(GlmrunError, match=r"\*args"):
        tool(lambda *args: None)


@pytest.fixture
def dispatcher():
    @tool
    def slow() -> str:
        """Sleep."""
        time.sleep(2)
        return "late"

    @tool
    def broken(x: int) -> int:
        """Fail."""
        raise RuntimeError(f"cannot handle {x}")

    return Dispatcher(ToolRegistry([get_weather, slow, broken]), timeout=0.3)


def test_dispatcher_runs_valid_calls(dispatcher):
    result = dispatcher.run("get_weather", {"city": "北京", "days": "3"})  # "3" is coerced like JSON would allow
    assert result.ok and json.loads(result.observation) == {"city": "北京", "days": 3, "metric": True,
                                                              "forecast": "sunny"}  # fmt: skip
    assert "北京" in result.observation  # non-ASCII kept readable for the model


@pytest.mark.parametrize(
    "name,arguments,fragment",
    [
        ("get_wether", {"city": "x"}, "unknown tool 'get_wether'; available tools: get_weather, slow, broken"),
        ("get_weather", {}, "city: Field required"),
        ("get_weather", {"city": "x", "days": "many"}, "days: Input should be a valid integer"),
        ("get_weather", {"city": "x", "hack": 1}, "hack: Extra inputs are not permitted"),
        ("broken", {"x": 7}, "RuntimeError: cannot handle 7"),
        ("slow", {}, "did not finish within 0.3 s"),
    ],
)
def test_dispatcher_turns_every_failure_into_an_observation(dispatcher, name, arguments, fragment):
    result = dispatcher.run(name, arguments)
    assert not result.ok and fragment in json.loads(result.observation)["error"]


def test_calculator():
    assert calculator("2 + 3 * 4") == 14
    assert calculator("(2 + 3) * sqrt(16) / 8") == 2.5
    assert calculator("2 ** 10 - 7 // 2 + 10 % 3") == 1022
    assert calculator("-pi + pi") == 0


@pytest.mark.parametrize(
    "expression", ["__import__('os').system('id')", "(1).__class__", "open('/etc/passwd')", "x + 1", "2 ** 10 ** 10",
                   "factorial(100000)", "[1, 2]", "lambda: 1"],
)  # fmt: skip
def test_calculator_refuses_everything_but_arithmetic(expression):
    started = time.monotonic()
    with pytest.raises(ValueError):
        calculator(expression)
    assert time.monotonic() - started < 1


def test_time_and_random_tools():
    assert get_current_time("Asia/Shanghai").endswith("CST")
    with pytest.raises(ValueError, match="unknown time zone"):
        get_current_time("Mars/Olympus")
    assert all(3 <= random_number(3, 5) <= 5 for _ in range(50))
    with pytest.raises(ValueError):
        random_number(5, 3)
    assert [t.name for t in BUILTIN_TOOLS] == ["get_current_time", "calculator", "random_number"]
