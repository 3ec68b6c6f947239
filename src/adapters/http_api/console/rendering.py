"""The console's Jinja2 environment: autoescape on for every template, always.

Every value that comes from a request, a statement or a result reaches the page through
`{{ … }}`, which escapes it; no template marks anything `safe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

__all__ = ["STATIC_DIR", "render", "render_fragment"]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"

_ENV = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_fragment(template: str, context: dict[str, Any]) -> str:
    return _ENV.get_template(template).render(context)


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> HTMLResponse:
    """A whole page; `session` (the signed-in caller, if any) is always in its context."""
    session = getattr(request.state, "console_session", None)
    page = render_fragment(template, {"session": session, "path": request.url.path, **context})
    return HTMLResponse(page, status_code=status)
