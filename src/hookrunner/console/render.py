"""The console's HTML: one autoescaping Jinja2 environment (not the rules sandbox: these
templates are ours, the data in them is not, so everything is escaped) and the headers every
page carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from hookrunner.console import present, static

TEMPLATES = Path(__file__).parent / "templates"

# No inline script or style anywhere: the policy forbids it, so injected markup cannot run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chrome send `Origin: null`
    "Cache-Control": "no-store",  # pages hold payloads and the CSRF token
}

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"], default_for_string=True),
    undefined=StrictUndefined,
    finalize=present.shown,  # no control character or bidi override reaches a page raw
    trim_blocks=True,
    lstrip_blocks=True,
    # Read once, at the start, as the code is: templates changed on disk under a running
    # server (an upgrade in place) met the code they were not written for (500s).
    auto_reload=False,
)
env.filters.update(
    time=present.fmt_time, iso=present.iso_time, seconds=present.fmt_seconds,
    status_class=present.status_class, pretty=present.pretty_json, size=present.fmt_size,
    visible=present.visible_log, rate=present.rate_text,
)
env.globals.update(condition_class=present.condition_class, static_url=static.url)


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


for _name in env.list_templates():  # all of them now, none at the first request
    env.get_template(_name)
