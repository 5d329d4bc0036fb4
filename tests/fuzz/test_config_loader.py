"""The config loader on generated gateway.toml documents: a config or a ConfigError whose
every error names its TOML path in the operator's words, never another exception, and
never a hang.

`loads_config` is the whole check `gateway validate` and a reload run on a file's text:
TOML parsing, structuring into the model (with its bounds), and the cross-reference and
file checks. Each example runs under a real deadline (tests/fuzz/deadline.py), so work
that grows without bound fails the example rather than stalling the run. The test holds
to no particular bound on any number: a value within the model's limits must load, one
past them must be refused, with its path, whatever the limits are.
"""

import re

import attrs
from hypothesis import given

from gateway.config import loads_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError
from tests.fuzz.config_strategies import documents, raw_documents
from tests.fuzz.deadline import deadline

#: Generous for two shared cores: the slowest valid documents load in milliseconds.
DEADLINE = 5.0
_TOP_LEVEL = {field.name for field in attrs.fields(GatewayConfig)}


def names_a_path(error: str) -> bool:
    """`where: what`, where `where` is the source (a TOML syntax error), "(top level)", or
    a TOML path starting at a top-level table."""
    where, colon, what = error.partition(": ")
    if not colon or not what:
        return False
    if where in ("<string>", "(top level)"):
        return True
    return re.split(r"[.\[]", where, maxsplit=1)[0] in _TOP_LEVEL


#: Python's words for a type mismatch: a message quoting them explains nothing to an
#: operator.
_PYTHON_WORDS = re.compile(
    r"object has no attribute|is not iterable|not subscriptable|unhashable|NoneType|"
    r"positional argument|object is not|unsupported operand|invalid literal for"
)


def load(text: str) -> None:
    with deadline(DEADLINE):
        try:
            config = loads_config(text)
        except ConfigError as exc:
            assert exc.errors, "a ConfigError with no error"
            for error in exc.errors:
                assert names_a_path(error), error
                assert not _PYTHON_WORDS.search(error), error
        else:
            assert isinstance(config, GatewayConfig)


@given(documents())
def test_a_document_from_the_schema_gives_a_config_or_errors_with_paths(text: str) -> None:
    load(text)


@given(raw_documents)
def test_any_text_gives_a_config_or_errors_with_paths(text: str) -> None:
    load(text)
