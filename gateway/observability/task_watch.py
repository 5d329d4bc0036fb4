"""`gateway tasks`: the live task tree of a running gateway, in the terminal.

It reads the admin endpoint's `/tasks/ws` WebSocket with trio-websocket: one snapshot, or
with `--follow` a screen that redraws on every update until interrupted. An admin it cannot
reach is an OSError, a question the admin refuses a ValueError, each with a one-line
reason for the command to print.
"""

import json
import sys
from urllib.parse import urlencode

from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gateway.observability.tasktree import render_text

_CLEAR = "\x1b[H\x1b[2J"
#: The close codes the admin refuses a question with (gateway/admin/app.py): 4400 bad
#: parameters, 4404 no such endpoint.
_REFUSALS = (4400, 4404)


async def watch_tasks(admin: str, follow: bool, interval: str, filters: dict[str, str]) -> None:
    """Prints the tree (oldest tasks first) once, or with `follow` redraws it on every
    update; `filters` are /tasks parameters (listener, cluster, older_than, state,
    show_query)."""
    query = urlencode({"interval": interval, "sort": "age", **filters})
    url = f"ws://{admin}/tasks/ws?{query}"
    try:
        async with open_websocket_url(url) as ws:
            while True:
                message = json.loads(await ws.get_message())
                text = render_text(message["tree"])
                if follow:
                    sys.stdout.write(_CLEAR + text + "\n")
                    sys.stdout.flush()
                else:
                    print(text)
                    return
    except HandshakeError as exc:
        # The reason is the connect error under it (refused, unknown name).
        raise OSError(str(exc.__cause__ or exc)) from exc
    except ConnectionClosed as exc:
        reason = exc.reason
        if reason is not None and reason.code in _REFUSALS:
            # The admin refused the question (a bad ?older_than=): its reason says why.
            raise ValueError(reason.reason or str(reason)) from exc
        raise OSError(f"the WebSocket closed: {reason}") from exc
