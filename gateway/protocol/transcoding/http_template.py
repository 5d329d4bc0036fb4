"""google.api.http path templates (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

`{name}` is `{name=*}`. `*` matches one segment, `**` any number of them (zero too), and
may only come last, before the verb: the rule http.proto states, and what keeps matching
linear (a `**` in the middle would make the matcher try every split of the path).
"""

import re

import attrs

#: A segment that matches any one path segment.
SINGLE = "*"
#: A segment that matches the rest of the path.
MULTI = "**"

_LITERAL = re.compile(r"[^/{}=*:?#\s]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class Variable:
    """A `{field.path=...}`: the segments [start, end) it binds (end None: to the end)."""

    field_path: tuple[str, ...]
    start: int
    end: int | None


@attrs.frozen
class PathTemplate:
    #: Literals, SINGLE or MULTI, variables' segments inlined.
    segments: tuple[str, ...]
    verb: str
    variables: tuple[Variable, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.segments: list[str] = []
        self.variables: list[Variable] = []

    def fail(self, why: str) -> ValueError:
        return ValueError(f"invalid path template {self.text!r} at {self.pos}: {why}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def take(self, pattern: re.Pattern[str], what: str) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            raise self.fail(f"expected {what}")
        self.pos = match.end()
        return match.group()

    def parse(self) -> PathTemplate:
        if not self.text.startswith("/"):
            raise self.fail("a template starts with '/'")
        self.pos = 1
        if self.text != "/":
            self.parse_segments(in_variable=False)
        verb = ""
        if self.peek() == ":":
            self.pos += 1
            verb = self.take(_LITERAL, "a verb")
        if self.pos != len(self.text):
            raise self.fail("unexpected character")
        if MULTI in self.segments[:-1]:
            raise self.fail("'**' may only be the last segment")
        return PathTemplate(tuple(self.segments), verb, tuple(self.variables))

    def parse_segments(self, in_variable: bool) -> None:
        while True:
            self.parse_segment(in_variable)
            if self.peek() != "/":
                return
            self.pos += 1

    def parse_segment(self, in_variable: bool) -> None:
        if self.text.startswith(MULTI, self.pos):
            self.pos += 2
            self.segments.append(MULTI)
        elif self.peek() == SINGLE:
            self.pos += 1
            self.segments.append(SINGLE)
        elif self.peek() == "{":
            if in_variable:
                raise self.fail("variables do not nest")
            self.parse_variable()
        else:
            self.segments.append(self.take(_LITERAL, "a segment"))

    def parse_variable(self) -> None:
        self.pos += 1
        path = [self.take(_IDENT, "a field name")]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.take(_IDENT, "a field name"))
        field_path = tuple(path)
        if any(v.field_path == field_path for v in self.variables):
            raise self.fail(f"variable {'.'.join(field_path)} twice")
        start = len(self.segments)
        if self.peek() == "=":
            self.pos += 1
            self.parse_segments(in_variable=True)
        else:
            self.segments.append(SINGLE)
        if self.peek() != "}":
            raise self.fail("expected '}'")
        self.pos += 1
        end = None if self.segments[-1] == MULTI else len(self.segments)
        self.variables.append(Variable(field_path, start, end))


def parse_template(text: str) -> PathTemplate:
    """The template's segments, verb and variables; ValueError naming what is wrong."""
    return _Parser(text).parse()
