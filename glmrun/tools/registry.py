"""`@tool`: a Python function becomes a tool the model can call, with a JSON schema built from its signature.

The schema comes from the type hints (`Annotated[str, "description"]` describes a parameter), the defaults
(parameters without one are required) and the docstring (its first paragraph describes the tool). The same
pydantic model that produces the schema validates the arguments the model sends, so what the model is told
and what is accepted cannot drift apart. Running tools is the dispatcher's job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import pydantic

from glmrun.errors import GlmrunError


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments_model: type[pydantic.BaseModel]

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments (an object with properties and required names)."""
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    def description_dict(self) -> dict[str, Any]:
        """The tool as ChatGLM3's system prompt lists it (and as OpenAI's `function` object)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Arguments checked and converted against the schema; pydantic.ValidationError if they do not fit."""
        return dict(self.arguments_model.model_validate(arguments))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)


def _field(annotation: Any, default: Any) -> tuple[Any, Any]:
    """(type, pydantic Field) of one parameter; an Annotated string becomes the description."""
    description = None
    if get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        description = next((extra for extra in extras if isinstance(extra, str)), None)
    required = default is inspect.Parameter.empty
    return annotation, pydantic.Field(... if required else default, description=description)


def tool(function: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None):
    """Decorator: `@tool` or `@tool(name=..., description=...)` turns a function into a Tool."""

    def wrap(function: Callable[..., Any]) -> Tool:
        signature = inspect.signature(function)
        hints = get_type_hints(function, include_extras=True)
        fields = {}
        for parameter in signature.parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise GlmrunError(f"tool {function.__name__}: *args/**kwargs cannot be described to the model")
            fields[parameter.name] = _field(hints.get(parameter.name, Any), parameter.default)
        model = pydantic.create_model(
            f"{function.__name__}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        doc = inspect.getdoc(function) or ""
        return Tool(
            name=name or function.__name__,
            description=description or doc.split("\n\n")[0].replace("\n", " "),
            function=function,
            arguments_model=model,
        )

    return wrap(function) if function is not None else wrap


class ToolRegistry:
    """Tools by name, in the order they were added."""

    def __init__(self, tools: list[Tool] | None = None) -> None:
        self.tools: dict[str, Tool] = {}
        for item in tools or []:
            self.add(item)

    def add(self, item: Tool) -> None:
        if not isinstance(item, Tool):
            raise GlmrunError(f"{item!r} is not a tool: decorate the function with @tool")
        if item.name in self.tools:
            raise GlmrunError(f"two tools are called {item.name!r}")
        self.tools[item.name] = item

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def descriptions(self) -> list[dict[str, Any]]:
        return [item.description_dict() for item in self.tools.values()]

    def __len__(self) -> int:
        return len(self.tools)
