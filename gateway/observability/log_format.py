"""The application log's formats on stderr: text lines (the default), or with
`[server] log_format = "json"` one JSON object per line, for log shippers.

Each JSON line has `time` (UTC, ISO 8601, to the millisecond), `level`, `logger`,
`message`, and when logged inside a task, `task_path`: the names of the annotated tasks
from the listener down (`["listener edge", "conn 127.0.0.1:51234", "stream 1 GET /api"]`,
the `/tasks` tree's names, query strings hidden as `/tasks` hides them) and `task_id`, the
innermost one's id in `/tasks` (what `POST /tasks/ID/cancel` takes). An exception's
traceback is the `exception` field, so a line is always one line.
"""

import json
import logging
import sys
import time

from gateway.observability.task_query import hide_query
from gateway.observability.tasktree import task_path

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Text lines on stderr, the gateway's loggers at `level` (any case). Libraries log at
    INFO at most: hpack's debug lines print every header it codes, credentials included."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    logging.basicConfig(level=max(numeric, logging.INFO), format=TEXT_FORMAT, stream=sys.stderr)
    logging.getLogger("gateway").setLevel(numeric)
    # aioquic logs every QUIC connection's handshake and close at INFO: a line per client
    # per event on a busy HTTP/3 listener. The gateway's own stats count them instead.
    logging.getLogger("quic").setLevel(max(numeric, logging.WARNING))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        where = task_path()
        if where is not None and where[0]:
            names, task_id = where
            entry["task_path"] = [hide_query(name) for name in names]
            if task_id is not None:
                entry["task_id"] = task_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def use_log_format(log_format: str) -> None:
    """Switches the root logger's handlers (what `gateway serve` set up) to `log_format`,
    "text" or "json"."""
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
