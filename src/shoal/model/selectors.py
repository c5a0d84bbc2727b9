"""Label and field selectors, parsed and matched the way Kubernetes does.

Label selectors follow ``k8s.io/apimachinery/pkg/labels``: the string syntax
(``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
``a>1``, ``a<1``, comma-separated), key and value validation, and the error
messages kubectl users see. Two constructors build them:

* :meth:`LabelSelector.parse` reads the ``?labelSelector=`` string. An empty
  string selects everything.
* :meth:`LabelSelector.from_api` reads a ``metav1.LabelSelector`` object (as in
  ``Deployment.spec.selector``). ``None`` (a nil selector) selects *nothing*,
  and ``{}`` selects *everything*, as ``metav1.LabelSelectorAsSelector`` does.

Field selectors follow ``k8s.io/apimachinery/pkg/fields``: only ``=``, ``==``
and ``!=``, with ``\\``-escapes for ``,``, ``=`` and ``\\`` in values. A field is
a dotted path into the object, and a missing field compares as ``""``.

Everything here is pure: no I/O and no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "FIELD_LABELS",
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "field_value",
    "format_labels",
    "is_label_value",
    "is_qualified_name",
]


class SelectorError(ValueError):
    """A selector that does not parse or does not validate.

    The message is the one the Kubernetes API server returns, so that a client
    sees the same words from Shoal (the API layer sends it as a 400).
    """


# --- validation (k8s.io/apimachinery/pkg/util/validation) ------------------------------------

_QNAME_CHAR = "[A-Za-z0-9]"
_QNAME_EXT_CHAR = "[-A-Za-z0-9_.]"
_QUALIFIED_NAME_FMT = f"({_QNAME_CHAR}{_QNAME_EXT_CHAR}*)?{_QNAME_CHAR}"
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_QUALIFIED_NAME_ERR = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_QUALIFIED_NAME_MAX = 63
_LABEL_VALUE_FMT = f"({_QUALIFIED_NAME_FMT})?"
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_ERR = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MAX = 63
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = f"{_DNS1123_LABEL_FMT}(\\.{_DNS1123_LABEL_FMT})*"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_ERR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MAX = 253


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # Reproduces RegexError, including its odd "',  or '" spacing, so messages match.
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            out += " or "
        out += f"'{example}', "
    return out + f"regex used for validation is '{fmt}')"


def _max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def is_qualified_name(value: str) -> list[str]:
    """Why ``value`` is not a qualified name (a label or annotation key); empty if it is."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if len(prefix) > _DNS1123_SUBDOMAIN_MAX:
                errs.append("prefix part " + _max_len_error(_DNS1123_SUBDOMAIN_MAX))
            if not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
                errs.append(
                    "prefix part "
                    + _regex_error(_DNS1123_SUBDOMAIN_ERR, _DNS1123_SUBDOMAIN_FMT, "example.com")
                )
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_ERR, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > _QUALIFIED_NAME_MAX:
        errs.append("name part " + _max_len_error(_QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_ERR, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_label_value(value: str) -> list[str]:
    """Why ``value`` is not a valid label value; empty if it is."""
    errs: list[str] = []
    if len(value) > _LABEL_VALUE_MAX:
        errs.append(_max_len_error(_LABEL_VALUE_MAX))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_ERR, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def _go_value(value: Any) -> str:
    # How field.Error prints a bad value: %q for strings, %#v for string slices.
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return str(value)


def _invalid(path: str, value: Any, detail: str) -> str:
    return f"{path}: Invalid value: {_go_value(value)}: {detail}"


def _aggregate(errs: list[str]) -> str:
    # utilerrors.NewAggregate: one message as is, several in brackets.
    unique = list(dict.fromkeys(errs))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --- label selectors -----------------------------------------------------------------------


class Operator(StrEnum):
    """Label selector operators, spelled as ``k8s.io/apimachinery/pkg/selection`` spells them."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_BINARY_OPERATORS = ("in", "notin", "=", "==", "!=", "gt", "lt")
_API_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def _parse_int(text: str) -> int | None:
    # strconv.ParseInt(s, 10, 64): optional sign, decimal digits, 64-bit range.
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    n = int(text)
    return n if -(2**63) <= n < 2**63 else None


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: a key, an operator and its values."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @classmethod
    def create(
        cls, key: str, operator: Operator, values: Iterable[str] = (), *, path: str = ""
    ) -> Requirement:
        """Validate and build a requirement, as ``labels.NewRequirement`` does."""
        vals = tuple(values)
        errs: list[str] = []
        prefix = f"{path}." if path else ""
        if msgs := is_qualified_name(key):
            errs.append(_invalid(f"{prefix}key", key, "; ".join(msgs)))
        values_path = f"{prefix}values"
        if operator in (Operator.IN, Operator.NOT_IN):
            if not vals:
                errs.append(
                    _invalid(
                        values_path, vals, "for 'in', 'notin' operators, values set can't be empty"
                    )
                )
        elif operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
            if len(vals) != 1:
                errs.append(
                    _invalid(
                        values_path, vals, "exact-match compatibility requires one single value"
                    )
                )
        elif operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            if vals:
                errs.append(
                    _invalid(
                        values_path, vals, "values set must be empty for exists and does not exist"
                    )
                )
        elif operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
            if len(vals) != 1:
                errs.append(
                    _invalid(
                        values_path, vals, "for 'Gt', 'Lt' operators, exactly one value is required"
                    )
                )
            for i, v in enumerate(vals):
                if _parse_int(v) is None:
                    errs.append(
                        _invalid(
                            f"{values_path}[{i}]",
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        )
                    )
        for i, v in enumerate(vals):
            if msgs := is_label_value(v):
                errs.append(_invalid(f"{values_path}[{i}][{key}]", v, "; ".join(msgs)))
        if errs:
            raise SelectorError(_aggregate(errs))
        return cls(key, Operator(operator), vals)

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        present = self.key in labels
        if op in (Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if op in (Operator.NOT_IN, Operator.NOT_EQUALS):
            # A missing key satisfies "notin" and "!=": Kubernetes documents this.
            return not present or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return present
        if op is Operator.DOES_NOT_EXIST:
            return not present
        if not present or len(self.values) != 1:
            return False
        have, want = _parse_int(labels[self.key]), _parse_int(self.values[0])
        if have is None or want is None:
            return False
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        if op is Operator.EXISTS:
            return self.key
        # Values print sorted, so equal selectors print alike.
        joined = ",".join(sorted(self.values)) if len(self.values) > 1 else "".join(self.values)
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({joined})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{joined}"


@dataclass(frozen=True)
class LabelSelector:
    """An AND of requirements, or the selector that matches nothing."""

    requirements: tuple[Requirement, ...] = ()
    matches_nothing: bool = False

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(matches_nothing=True)

    @classmethod
    def from_set(cls, labels: Mapping[str, str] | None) -> LabelSelector:
        """Equality on every pair (``Service.spec.selector``); empty or None selects everything."""
        have = labels or {}
        if not _all_str(have.values()):
            raise SelectorError("a label set must map keys to string values")
        return cls(_sorted(Requirement.create(k, Operator.EQUALS, [v]) for k, v in have.items()))

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse the string form (``?labelSelector=``); ``""`` selects everything."""
        return cls(_sorted(_LabelParser(text).parse()))

    @classmethod
    def from_api(cls, sel: Mapping[str, Any] | None) -> LabelSelector:
        """Convert a ``metav1.LabelSelector``: None selects nothing, ``{}`` selects everything."""
        if sel is None:
            return cls.nothing()
        match_labels = sel.get("matchLabels") or {}
        match_expressions = sel.get("matchExpressions") or []
        # Stored objects are validated elsewhere; a malformed one must still fail cleanly.
        if not isinstance(match_labels, Mapping) or not _all_str(match_labels.values()):
            raise SelectorError("matchLabels must map label keys to string values")
        if not isinstance(match_expressions, list):
            raise SelectorError("matchExpressions must be a list")
        if not match_labels and not match_expressions:
            return cls.everything()
        reqs = [Requirement.create(k, Operator.EQUALS, [v]) for k, v in match_labels.items()]
        for expr in match_expressions:
            if not isinstance(expr, Mapping):
                raise SelectorError("each of matchExpressions must be an object")
            op_name = expr.get("operator", "")
            op = _API_OPERATORS.get(op_name) if isinstance(op_name, str) else None
            if op is None:
                raise SelectorError(f"{_go_value(op_name)} is not a valid label selector operator")
            key, values = expr.get("key", ""), expr.get("values") or []
            if not isinstance(key, str) or not isinstance(values, list) or not _all_str(values):
                raise SelectorError("a match expression needs a string key and string values")
            reqs.append(Requirement.create(key, op, values))
        return cls(_sorted(reqs))

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything (it matches every object)."""
        return not self.requirements and not self.matches_nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.matches_nothing:
            return False
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value ``key`` must have, if the selector pins it (for indexing)."""
        for r in self.requirements:
            if r.key == key:
                exact = (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN)
                if r.operator in exact and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _all_str(items: Iterable[Any]) -> bool:
    return all(isinstance(i, str) for i in items)


def _sorted(reqs: Iterable[Requirement]) -> tuple[Requirement, ...]:
    # Kubernetes sorts by key so that equal selectors print alike; a stable sort keeps
    # duplicate keys in the order they were written.
    return tuple(sorted(reqs, key=lambda r: r.key))


def format_labels(labels: Mapping[str, str] | None) -> str:
    """``labels.FormatLabels``: ``k=v`` pairs sorted by key, or ``<none>``."""
    have = labels or {}
    text = ",".join(f"{k}={have[k]}" for k in sorted(have))
    return text or "<none>"


# The lexer and parser mirror labels/selector.go, so that odd inputs fail (or pass) the same way.

_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_TOKENS = {
    ")": "CLOSE",
    ",": "COMMA",
    "!": "NOT",
    "==": "DOUBLE_EQUALS",
    "=": "EQUALS",
    ">": "GT",
    "in": "IN",
    "<": "LT",
    "!=": "NOT_EQUALS",
    "notin": "NOT_IN",
    "(": "OPEN",
}
_ID, _END, _ERROR = "ID", "END", "ERROR"


def _lex(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            out.append((_END, ""))
            return out
        if text[pos] in _SPECIAL:
            # Longest run of special characters that is still a token ("!=" not "!").
            buf, best, best_end = "", None, pos
            i = pos
            while i < n and text[i] in _SPECIAL:
                buf += text[i]
                i += 1
                if buf in _TOKENS:
                    best, best_end = buf, i
                elif best is not None:
                    break
            if best is None:
                out.append((_ERROR, f"error expected: keyword found '{buf}'"))
                pos = i
            else:
                out.append((_TOKENS[best], best))
                pos = best_end
            continue
        start = pos
        while pos < n and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        word = text[start:pos]
        out.append((_TOKENS.get(word, _ID), word))


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def _peek(self, values: bool = True) -> tuple[str, str]:
        tok, lit = self.items[self.pos]
        # In a value position "in" and "notin" are plain words ("x in (in)").
        if values and tok in ("IN", "NOT_IN"):
            tok = _ID
        return tok, lit

    def _next(self, values: bool = True) -> tuple[str, str]:
        item = self._peek(values)
        self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self._peek()
            if tok in (_ID, "NOT"):
                try:
                    reqs.append(self._requirement())
                except SelectorError as e:
                    raise SelectorError(f"unable to parse requirement: {e}") from None
                tok, lit = self._next()
                if tok == _END:
                    return reqs
                if tok == "COMMA":
                    tok2, lit2 = self._peek()
                    if tok2 not in (_ID, "NOT"):
                        raise SelectorError(f"found '{lit2}', expected: identifier after ','")
                    continue
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            if tok == _END:
                return reqs
            raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def _requirement(self) -> Requirement:
        negate = False
        tok, key = self._next()
        if tok == "NOT":
            negate = True
            tok, key = self._next()
        if tok != _ID:
            raise SelectorError(f"found '{key}', expected: identifier")
        if msgs := is_qualified_name(key):
            raise SelectorError(_invalid("<nil>", key, "; ".join(msgs)))
        nxt, _ = self._peek()
        if negate:
            # "!key" takes no operator; anything after it is reported by the caller.
            return Requirement.create(key, Operator.DOES_NOT_EXIST)
        if nxt in (_END, "COMMA"):
            return Requirement.create(key, Operator.EXISTS)
        tok, lit = self._next(values=False)
        ops = {
            "IN": Operator.IN,
            "NOT_IN": Operator.NOT_IN,
            "EQUALS": Operator.EQUALS,
            "DOUBLE_EQUALS": Operator.DOUBLE_EQUALS,
            "NOT_EQUALS": Operator.NOT_EQUALS,
            "GT": Operator.GREATER_THAN,
            "LT": Operator.LESS_THAN,
        }
        op = ops.get(tok)
        if op is None:
            raise SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        if op in (Operator.IN, Operator.NOT_IN):
            values = self._value_set()
        else:
            values = self._exact_value()
        return Requirement.create(key, op, sorted(values))

    def _value_set(self) -> set[str]:
        tok, lit = self._next()
        if tok != "OPEN":
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self._peek()
        if tok == "CLOSE":  # "()" is the set holding the empty string
            self._next()
            return {""}
        if tok not in (_ID, "COMMA"):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:
            tok, lit = self._next()
            if tok == _ID:
                values.add(lit)
                tok2, lit2 = self._peek()
                if tok2 == "COMMA":
                    continue
                if tok2 == "CLOSE":
                    break
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok == "COMMA":
                # Empty items between commas are empty-string values: "(,a)" and "(a,)".
                if not values:
                    values.add("")
                tok2, _ = self._peek()
                if tok2 == "CLOSE":
                    values.add("")
                    break
                if tok2 == "COMMA":
                    values.add("")
                continue
            raise SelectorError(f"found '{lit}', expected: ',', or identifier")
        tok, _ = self._next()
        if tok != "CLOSE":
            raise SelectorError(f"found '{lit}', expected: ')'")
        return values

    def _exact_value(self) -> set[str]:
        tok, _ = self._peek()
        if tok in (_END, "COMMA"):
            return {""}
        tok, lit = self._next()
        if tok == _ID:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


# --- field selectors -----------------------------------------------------------------------

# The field labels each built-in kind can be selected on (pkg/registry/*/strategy.go and
# the field label conversions of pkg/apis/*/v1); any other is a 400 "field label not
# supported", as from the API server. Every kind also supports metadata.name and
# metadata.namespace, and custom resources only those.
FIELD_LABELS: dict[str, frozenset[str]] = {
    "Pod": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "Node": frozenset({"spec.unschedulable"}),
    "Namespace": frozenset({"status.phase"}),
    "Secret": frozenset({"type"}),
    "Service": frozenset({"spec.clusterIP", "spec.type"}),
    "ReplicaSet": frozenset({"status.replicas"}),
    "ReplicationController": frozenset({"status.replicas"}),
    "Job": frozenset({"status.successful"}),
    "Event": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
}
_COMMON_FIELD_LABELS = frozenset({"metadata.name", "metadata.namespace"})

# Field labels whose name is not the object's path, and what an unset field reads as.
_FIELD_PATHS = {
    "status.successful": "status.succeeded",
    "reportingComponent": "reportingController",
}
_FIELD_DEFAULTS = {
    "spec.unschedulable": "false",
    "spec.hostNetwork": "false",
    "status.replicas": "0",
    "status.successful": "0",
}


def _lookup(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def field_value(obj: Mapping[str, Any], field_label: str) -> str:
    """The string a field selector compares for ``field_label`` in ``obj``."""
    if field_label == "source":
        # Events: the legacy source component, else the new reporting controller.
        value = _lookup(obj, "source.component") or _lookup(obj, "reportingController")
    else:
        value = _lookup(obj, _FIELD_PATHS.get(field_label, field_label))
    if value is None:
        return _FIELD_DEFAULTS.get(field_label, "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return ""  # maps and lists are not selectable


def _split_terms(text: str) -> list[str]:
    # Split on commas not escaped by a backslash.
    terms: list[str] = []
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape(value: str) -> str:
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


@dataclass(frozen=True)
class FieldRequirement:
    """One term of a field selector. ``operator`` is ``=`` or ``!=`` (``==`` reads as ``=``)."""

    field: str
    operator: str
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        equal = field_value(obj, self.field) == self.value
        return equal if self.operator == "=" else not equal

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{_escape(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """An AND of field requirements; the empty selector matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FieldSelector:
        reqs: list[FieldRequirement] = []
        # Kubernetes sorts the raw terms, so equal selectors print alike.
        for term in sorted(_split_terms(text)):
            if not term:
                continue
            for i in range(len(term)):
                op = next((o for o in ("!=", "==", "=") if term.startswith(o, i)), None)
                if op is not None:
                    lhs, rhs = term[:i], term[i + len(op) :]
                    break
            else:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
            reqs.append(FieldRequirement(lhs, "!=" if op == "!=" else "=", _unescape(rhs)))
        return cls(tuple(reqs))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def requires_exact_match(self, field_label: str) -> str | None:
        """The value ``field_label`` must equal, if the selector pins it (for indexing)."""
        for r in self.requirements:
            if r.field == field_label and r.operator == "=":
                return r.value
        return None

    def check_supported(self, kind: str) -> None:
        """Reject field labels the kind cannot be selected on, as the API server does.

        Kinds missing from :data:`FIELD_LABELS` (custom resources among them) allow
        only ``metadata.name`` and ``metadata.namespace``.
        """
        allowed = _COMMON_FIELD_LABELS | FIELD_LABELS.get(kind, frozenset())
        for r in self.requirements:
            if r.field not in allowed:
                raise SelectorError(f"field label not supported: {r.field}")

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)
