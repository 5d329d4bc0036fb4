"""The admin `/` page: a dashboard in plain HTML and JavaScript (dashboard.html, no build
step) that reads the admin endpoints itself, with the list of endpoints rendered in."""

import html
from importlib.resources import files

from gateway.admin.views import Reply

_TEMPLATE = files("gateway.admin").joinpath("dashboard.html").read_text(encoding="utf-8")


def page(endpoints: list[tuple[str, str, bool]]) -> Reply:
    """The dashboard; `endpoints` are (path, help, changes state): those get no link, as a
    link would GET them."""

    def cell(path: str, mutates: bool) -> str:
        path = html.escape(path)
        return path if mutates else f'<a href="{path}">{path}</a>'

    rows = "\n".join(
        f"<tr><td>{cell(p, mutates)}</td><td>{html.escape(h)}</td></tr>"
        for p, h, mutates in endpoints
    )
    body = _TEMPLATE.replace("{{ENDPOINTS}}", rows)
    return Reply(200, "text/html; charset=utf-8", body.encode())
