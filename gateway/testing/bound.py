"""The expectation language's one construct: a bound on a number.

`0` or `"== 0"` (exactly), `">= 990"`, `"<= 1s"` (durations in seconds), `"< 5"`, `"> 0"`,
`"10..20"` (both ends included). Kept with the text the operator wrote, for the report.
"""

import operator
import re
from collections.abc import Callable

import attrs

from gateway.config.load import parse_duration

_COMPARISON = re.compile(r"^\s*(==|>=|<=|<|>)?\s*(\S+)\s*$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    ">": operator.gt,
}


@attrs.frozen
class Bound:
    text: str
    low: float
    high: float
    #: For the one-sided and exact forms: the comparison and its operand.
    op: str = ""

    def holds(self, value: float) -> bool:
        if self.op:
            return _OPERATORS[self.op](value, self.low)
        return self.low <= value <= self.high


def _number(text: str) -> float:
    """A count, or a duration in seconds."""
    try:
        return float(int(text))
    except ValueError:
        pass
    try:
        return float(text) if re.fullmatch(r"\d+\.\d+", text) else parse_duration(text)
    except ValueError:
        raise ValueError(f"expected a number or a duration such as '30ms', got {text!r}") from None


def parse_bound(value: object) -> Bound:
    """A Bound from a TOML value; ValueError saying what a bound looks like."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Bound(str(value), float(value), float(value), "==")
    if not isinstance(value, str):
        raise ValueError(
            f"expected a bound such as 0, '>= 990', '<= 30ms' or '1..5', got {value!r}"
        )
    if ".." in value:
        low_text, _, high_text = value.partition("..")
        low, high = _number(low_text.strip()), _number(high_text.strip())
        if low > high:
            raise ValueError(f"expected a range low..high, got {value!r}")
        return Bound(value, low, high)
    if m := _COMPARISON.match(value):
        number = _number(m.group(2))
        return Bound(value, number, number, m.group(1) or "==")
    raise ValueError(f"expected a bound such as 0, '>= 990', '<= 30ms' or '1..5', got {value!r}")
