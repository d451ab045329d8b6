"""Chat templates shipped with a model (GGUF `tokenizer.chat_template`, `chat_template` in tokenizer_config.json),
rendered like Hugging Face's `apply_chat_template`: Jinja2 with trim_blocks and lstrip_blocks, the variables
`messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `tools`, and `raise_exception`. The template is
data from a downloaded file, so it runs in Jinja's immutable sandbox: no attribute access to Python internals,
no mutation of the values it is given.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from glmrun.errors import GlmrunError


def _raise_exception(message: str) -> None:
    raise GlmrunError(f"the chat template refused the conversation: {message}")


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.globals["raise_exception"] = _raise_exception
    environment.filters["tojson"] = _tojson
    try:
        return environment.from_string(template)
    except jinja2.TemplateSyntaxError as bad:
        raise GlmrunError(f"the model's chat template is not valid Jinja: {bad}") from None


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
    tools: list[dict[str, Any]] | None = None,
) -> str:
    try:
        return _compile(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=tools,
        )
    except jinja2.exceptions.SecurityError as bad:
        raise GlmrunError(f"the chat template tried something unsafe: {bad}") from None
    except jinja2.TemplateError as bad:
        raise GlmrunError(f"the chat template failed: {bad}") from None
