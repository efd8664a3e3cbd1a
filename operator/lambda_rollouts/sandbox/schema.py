"""Admission of custom resources as kube-apiserver performs it for a CRD, without a cluster.

Contract:
- ``load_crd(path)`` reads the first CustomResourceDefinition in a YAML file.
- ``prune_object(crd, obj)`` returns what kube-apiserver would keep of ``obj`` after decoding it:
  fields the structural schema does not declare are dropped (``apiVersion``, ``kind`` and
  ``metadata`` stay at the root and in embedded resources; ``x-kubernetes-preserve-unknown-fields``
  keeps the rest), nulls in non-nullable fields are dropped and ``default`` values are filled in.
  The input is not modified. ``unknown_fields(crd, obj)`` lists the paths that pruning drops, as
  the API server names them in ``unknown field "..."`` warnings and strict-decoding errors.
- ``validate_object(crd, obj)`` returns the API server's field errors for ``obj`` in its wording,
  for example ``spec.alias: Required value``: OpenAPI v3 value validation, then the uniqueness of
  ``x-kubernetes-list-type`` set and map lists, then the CEL ``x-kubernetes-validations`` rules.
  Like the API server it skips the CEL rules, adding its ``<nil>: Invalid value: null: some
  validation rules were not checked ...`` error, once a type, required, enum or size error makes
  the object unfit for them. It checks ``obj`` exactly as given: prune first to see what a create
  would store. The wording is kube-apiserver 1.36's, checked against it (tests/envtest):
  - a rule that fails on an object or an array shows no value (``spec: Invalid value: set exactly
    one of ...``, since 1.35); on a scalar it shows the value; a rule that cannot be evaluated
    shows the node's type (``Invalid value: "object": <why> evaluating rule: <message>``);
  - a string reports only the first of its maxLength, minLength and pattern errors;
  - an integer field holding a non-integral JSON number also gets kube-openapi's range error at
    ``<nil>`` (``Checked value must be of type integer (default format) in <path>``);
  - CEL reads an integer field that holds a JSON float (``10.0``: the schema admits it) as an
    error, ``invalid data, expected int, got float64``, which fails the rules that read it (a
    ``has()`` test included) and which ``||`` and ``&&`` absorb as CEL does.
  The API server validates the properties of an object in Go's random map order; the order of the
  errors here is the schema's. ``validate_status(crd, status)`` checks the ``status`` subtree
  alone, as a write to the status subresource needs. An empty list means the object is admitted.
- ``check_object`` and ``check_status`` return the same errors as ``FieldError`` values;
  ``invalid_status`` turns them into the 422 ``Status`` body the API server answers with.
- The schema is that of the version named by the object's ``apiVersion`` (or ``version=``),
  otherwise the storage version. A version the CRD does not serve is a ``ValueError``.

Schema keywords evaluated: type, nullable, format (date-time and date are checked, other formats
accepted), enum, pattern (Go RE2, the API server's regular expressions), minLength, maxLength,
minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf, minItems, maxItems,
minProperties, maxProperties, required, properties, additionalProperties, items, default, and the
x-kubernetes extensions int-or-string, preserve-unknown-fields, embedded-resource, list-type,
list-map-keys and validations (rule, message, messageExpression, reason, fieldPath). Not evaluated:
allOf, anyOf, oneOf and not; transition rules (those that read ``oldSelf``: the checks are those
of a create); CEL cost limits.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import functools
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import celpy
import re2
import yaml
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, Evaluator

__all__ = [
    "OMIT",
    "ErrorType",
    "FieldError",
    "check_object",
    "check_status",
    "invalid_status",
    "load_crd",
    "prune_object",
    "unknown_fields",
    "validate_object",
    "validate_status",
    "version_schema",
]

Json = Any
Schema = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Field errors, worded as k8s.io/apimachinery/pkg/util/validation/field words them.


class ErrorType(enum.StrEnum):
    NOT_FOUND = "FieldValueNotFound"
    REQUIRED = "FieldValueRequired"
    DUPLICATE = "FieldValueDuplicate"
    INVALID = "FieldValueInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    FORBIDDEN = "FieldValueForbidden"
    TOO_LONG = "FieldValueTooLong"
    TOO_MANY = "FieldValueTooMany"
    INTERNAL = "InternalError"
    TYPE_INVALID = "FieldValueTypeInvalid"


_TITLES: Final = {
    ErrorType.NOT_FOUND: "Not found",
    ErrorType.REQUIRED: "Required value",
    ErrorType.DUPLICATE: "Duplicate value",
    ErrorType.INVALID: "Invalid value",
    ErrorType.NOT_SUPPORTED: "Unsupported value",
    ErrorType.FORBIDDEN: "Forbidden",
    ErrorType.TOO_LONG: "Too long",
    ErrorType.TOO_MANY: "Too many",
    ErrorType.INTERNAL: "Internal error",
    ErrorType.TYPE_INVALID: "Invalid value",
}
_VALUELESS: Final = {ErrorType.REQUIRED, ErrorType.FORBIDDEN, ErrorType.TOO_LONG, ErrorType.INTERNAL}


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()
"""A ``FieldError.value`` that is not shown."""

BLOCKED_RULES_DETAIL: Final = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)
# Errors after which the API server does not evaluate CEL rules: the object lacks the shape they assume.
_BLOCKING: Final = {
    ErrorType.NOT_SUPPORTED,
    ErrorType.REQUIRED,
    ErrorType.TOO_LONG,
    ErrorType.TOO_MANY,
    ErrorType.TYPE_INVALID,
}


@dataclass(frozen=True)
class FieldError:
    """One field error: ``str()`` gives the API server's text, ``body`` the text after the field."""

    type: ErrorType
    field: str
    value: Json = OMIT
    detail: str = ""

    @property
    def body(self) -> str:
        text = _TITLES[self.type]
        if self.type not in _VALUELESS and self.value is not OMIT:
            text += ": " + _go_value(self.value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body}"


def _go_value(value: Json) -> str:
    """A bad value as field.Error prints it: %v for scalars, %q for strings, JSON otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_quote(value)
    return _go_json(value)


_GO_ESCAPES: Final = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
}


def _go_quote(text: str) -> str:
    """Go's strconv.Quote."""
    out = ['"']
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _shortest_digits(number: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip ``abs(number)``, and the decimal point's position."""
    exponent = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(str(digit) for digit in exponent.digits)
    assert isinstance(exponent.exponent, int)
    return digits, len(digits) + exponent.exponent


def _go_float(number: float) -> str:
    """Go's %v for a float64 (strconv 'g' with the shortest precision)."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, number) < 0 else ""
    if number == 0:
        return sign + "0"
    digits, point = _shortest_digits(number)
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + _fixed(digits, point)


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _go_json_float(number: float) -> str:
    """A float64 as Go's encoding/json writes it."""
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    sign = "-" if number < 0 else ""
    digits, point = _shortest_digits(number)
    if 1e-6 <= abs(number) < 1e21:
        return sign + _fixed(digits, point)
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}".replace("e-0", "e-")


def _go_json(value: Json) -> str:
    """Go's json.Marshal of a decoded JSON value: compact, map keys sorted, HTML characters escaped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escape)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, dict):
        items = (f"{_go_json(str(key))}:{_go_json(item)}" for key, item in sorted(value.items()))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    return _go_json(str(value))


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError(ErrorType.REQUIRED, path, "", detail)


def _invalid(path: str, value: Json, detail: str) -> FieldError:
    return FieldError(ErrorType.INVALID, path, value, detail)


def _type_invalid(path: str, type_name: str, actual: Json) -> FieldError:
    # kube-openapi's errors.InvalidType: %q of the value when it is a string.
    detail = f"{path} in body must be of type {type_name}"
    if isinstance(actual, str):
        detail += ": " + _go_quote(actual)
    return FieldError(ErrorType.TYPE_INVALID, path or "<nil>", actual, detail)


def _not_supported(path: str, value: Json, allowed: list[Json]) -> FieldError:
    names = [item if isinstance(item, str) else _go_json(item) for item in allowed]
    detail = "supported values: " + ", ".join(_go_quote(name) for name in names) if names else ""
    return FieldError(ErrorType.NOT_SUPPORTED, path, value, detail)


def _too_long(path: str, limit: int) -> FieldError:
    unit = "byte" if limit == 1 else "bytes"
    return FieldError(ErrorType.TOO_LONG, path, "<value omitted>", f"may not be more than {limit} {unit}")


def _too_many(path: str, actual: int, limit: int) -> FieldError:
    unit = "item" if limit == 1 else "items"
    return FieldError(ErrorType.TOO_MANY, path, actual, f"must have at most {limit} {unit}")


# ---------------------------------------------------------------------------------------------
# The CRD.


def load_crd(path: str | Path) -> dict[str, Any]:
    """The first CustomResourceDefinition in the YAML file at ``path``."""
    with open(path, encoding="utf-8") as stream:
        for document in yaml.safe_load_all(stream):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                return document
    raise ValueError(f"{path}: no CustomResourceDefinition found")


def version_schema(crd: dict[str, Any], version: str | None = None) -> Schema:
    """The openAPIV3Schema of a served version (by name, else the storage version); {} when it has none."""
    versions = crd.get("spec", {}).get("versions", [])
    for entry in versions:
        wanted = entry.get("name") == version if version is not None else entry.get("storage", False)
        if wanted:
            if not entry.get("served", False):
                raise ValueError(f"version {entry.get('name')!r} of {_crd_name(crd)} is not served")
            schema: Schema = entry.get("schema", {}).get("openAPIV3Schema", {})
            return schema
    raise ValueError(f"{_crd_name(crd)} has no version {version!r}")


def _crd_name(crd: dict[str, Any]) -> str:
    return str(crd.get("metadata", {}).get("name", "the CRD"))


def _object_version(crd: dict[str, Any], obj: Json, version: str | None) -> str | None:
    if version is not None:
        return version
    api_version = obj.get("apiVersion") if isinstance(obj, dict) else None
    if not isinstance(api_version, str) or "/" not in api_version:
        return None
    group, _, name = api_version.partition("/")
    expected = crd.get("spec", {}).get("group")
    if group != expected:
        raise ValueError(f"apiVersion {api_version!r} is not in group {expected!r}")
    return name


def _normalise(value: Json) -> Json:
    """A copy as JSON would carry it: YAML timestamps become RFC 3339 strings, tuples lists."""
    if isinstance(value, dict):
        return {str(key): _normalise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    if isinstance(value, dt.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# ---------------------------------------------------------------------------------------------
# Pruning and defaulting, as the API server decodes a custom resource.

_META_FIELDS: Final = ("apiVersion", "kind", "metadata")


def prune_object(crd: dict[str, Any], obj: dict[str, Any], *, version: str | None = None) -> dict[str, Any]:
    """``obj`` as the API server stores it: unknown fields and non-nullable nulls dropped, defaults set."""
    schema = version_schema(crd, _object_version(crd, obj, version))
    pruned = _normalise(obj)
    _prune(pruned, schema, "", is_root=True, dropped=[])
    _drop_nulls(pruned, schema)
    _default(pruned, schema)
    result: dict[str, Any] = pruned
    return result


def unknown_fields(crd: dict[str, Any], obj: dict[str, Any], *, version: str | None = None) -> list[str]:
    """The paths of the fields that pruning drops, e.g. ``spec.strategy.canary.steps[0].wait``."""
    schema = version_schema(crd, _object_version(crd, obj, version))
    dropped: list[str] = []
    _prune(_normalise(obj), schema, "", is_root=True, dropped=dropped)
    return dropped


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _additional(schema: Schema | None) -> Schema | None:
    extra = schema.get("additionalProperties") if schema is not None else None
    if isinstance(extra, dict):
        return extra
    if extra is True:
        return {"x-kubernetes-preserve-unknown-fields": True}
    return None


def _prune(value: Json, schema: Schema | None, path: str, *, is_root: bool, dropped: list[str]) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        _prune_known(value, schema, path, dropped)
        return
    keep_meta = is_root or (schema is not None and schema.get("x-kubernetes-embedded-resource", False))
    if isinstance(value, dict):
        properties = schema.get("properties", {}) if schema is not None else {}
        extra = _additional(schema)
        for key in list(value):
            if keep_meta and key in _META_FIELDS:
                continue
            if key in properties:
                _prune(value[key], properties[key], _join(path, key), is_root=False, dropped=dropped)
            elif extra is not None:
                _prune(value[key], extra, _join(path, key), is_root=False, dropped=dropped)
            else:
                dropped.append(_join(path, key))
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for index, item in enumerate(value):
            _prune(item, items, f"{path}[{index}]", is_root=False, dropped=dropped)


def _prune_known(value: Json, schema: Schema, path: str, dropped: list[str]) -> None:
    """Below x-kubernetes-preserve-unknown-fields, unknown fields stay but declared ones are pruned."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = _additional(schema)
        for key, item in value.items():
            if schema.get("x-kubernetes-embedded-resource") and key in _META_FIELDS:
                continue
            if key in properties:
                _prune(item, properties[key], _join(path, key), is_root=False, dropped=dropped)
            elif extra is not None:
                _prune(item, extra, _join(path, key), is_root=False, dropped=dropped)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune_known(item, schema["items"], f"{path}[{index}]", dropped)


def _field_schema(schema: Schema | None, key: str) -> Schema | None:
    if schema is None:
        return None
    properties: dict[str, Schema] = schema.get("properties", {})
    return properties[key] if key in properties else _additional(schema)


def _drop_nulls(value: Json, schema: Schema | None) -> None:
    if isinstance(value, dict):
        for key in list(value):
            sub = _field_schema(schema, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
            else:
                _drop_nulls(value[key], sub)
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for item in value:
            _drop_nulls(item, items)


def _default(value: Json, schema: Schema | None) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            absent = key not in value or (value[key] is None and not sub.get("nullable"))
            if "default" in sub and absent:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            _default(item, _field_schema(schema, key))
    elif isinstance(value, list):
        for item in value:
            _default(item, schema.get("items"))


# ---------------------------------------------------------------------------------------------
# OpenAPI v3 value validation, in kube-openapi's order and words.


def _json_type(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_matches(declared: str, actual: str, value: Json) -> bool:
    if declared == actual:
        return True
    if declared == "number":
        return actual == "integer"
    if declared == "integer" and actual == "number":
        return math.isfinite(value) and float(value).is_integer()
    return False


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except Exception as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid RE2 expression: {exc}") from exc


_DATE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME: Final = re.compile(r"(\d{2}):(\d{2}):(\d{2})(\.\d+)?(z|[+-]\d{2}:?\d{2})?")


def _is_date(text: str) -> bool:
    match = _DATE.fullmatch(text)
    if match is None:
        return False
    try:
        dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def _is_date_time(text: str) -> bool:
    date, separator, clock = text.lower().partition("t")
    match = _TIME.fullmatch(clock)
    return bool(separator) and _is_date(date) and match is not None and match[1] <= "23" and match[2] <= "59"


_FORMATS: Final = {"date-time": _is_date_time, "datetime": _is_date_time, "date": _is_date}


def _json_equal(left: Json, right: Json) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


def _limit(number: Json) -> str:
    """A schema bound as kube-openapi prints it: an int64 or a float64 with %v."""
    return str(number) if isinstance(number, int) else _go_float(float(number))


def _validate(schema: Schema, value: Json, path: str, errors: list[FieldError]) -> None:
    declared = schema.get("type")
    int_or_string = schema.get("x-kubernetes-int-or-string", False)
    actual = _json_type(value)
    if value is None:
        if (declared or int_or_string) and not schema.get("nullable"):
            errors.append(_type_invalid(path, declared or "integer,string", "null"))
        _validate_enum(schema, value, path, errors)
        return
    if declared and not _type_matches(declared, actual, value):
        errors.append(_type_invalid(path, declared, actual))
    elif int_or_string and actual not in ("integer", "string"):
        errors.append(_type_invalid(path, "integer,string", actual))
    if isinstance(value, str):
        _validate_string(schema, value, path, errors)
    if _is_number(value):
        _validate_number(schema, value, path, errors)
    if isinstance(value, list):
        _validate_array(schema, value, path, errors)
    _validate_enum(schema, value, path, errors)
    if isinstance(value, dict):
        _validate_object_node(schema, value, path, errors)


def _validate_string(schema: Schema, value: str, path: str, errors: list[FieldError]) -> None:
    # kube-openapi's string validator stops at the first failure: maxLength, minLength, pattern.
    pattern = schema.get("pattern")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(_too_long(path, schema["maxLength"]))
    elif "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(
            _invalid(path, value, f"{path} in body should be at least {schema['minLength']} chars long")
        )
    elif pattern is not None and _regex(pattern).search(value) is None:
        errors.append(_invalid(path, value, f"{path} in body should match '{pattern}'"))
    check = _FORMATS.get(schema.get("format", ""))
    if check is not None and not check(value):
        errors.append(_type_invalid(path, schema["format"], value))


_INTEGER_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _integer_range_error(schema: Schema, value: float, path: str) -> FieldError | None:
    """kube-openapi's check that an integer field's value converts to an int64 (or int32) without loss.

    Its error is a plain one, so the API server reports it at the root (``<nil>``) with an empty value.
    """
    if schema.get("type") != "integer" or not isinstance(value, float):
        return None
    fmt = schema.get("format", "")
    low, high = _INTEGER_RANGES.get(fmt, _INTEGER_RANGES["int64"])
    if math.isfinite(value) and value.is_integer() and low <= value <= high:
        return None
    kind = f"with format {fmt}" if fmt in _INTEGER_RANGES else "(default format)"
    return _invalid("<nil>", "", f"Checked value must be of type integer {kind} in {path}")


def _validate_number(schema: Schema, value: float, path: str, errors: list[FieldError]) -> None:
    # kube-openapi's order: the type's range, then multipleOf, minimum, maximum.
    range_error = _integer_range_error(schema, value, path)
    if range_error is not None:
        errors.append(range_error)
    factor = schema.get("multipleOf")
    if factor is not None and factor > 0:
        quotient = value / factor
        if not (math.isfinite(quotient) and float(quotient).is_integer()):
            errors.append(_invalid(path, value, f"{path} in body should be a multiple of {_limit(factor)}"))
    if "minimum" in schema:
        bottom = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= bottom:
            errors.append(_invalid(path, value, f"{path} in body should be greater than {_limit(bottom)}"))
        elif value < bottom:
            errors.append(
                _invalid(path, value, f"{path} in body should be greater than or equal to {_limit(bottom)}")
            )
    if "maximum" in schema:
        top = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= top:
            errors.append(_invalid(path, value, f"{path} in body should be less than {_limit(top)}"))
        elif value > top:
            errors.append(
                _invalid(path, value, f"{path} in body should be less than or equal to {_limit(top)}")
            )


def _validate_array(schema: Schema, value: list[Json], path: str, errors: list[FieldError]) -> None:
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(items, item, f"{path}[{index}]", errors)
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            _invalid(path, len(value), f"{path} in body should have at least {schema['minItems']} items")
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(_too_many(path, len(value), schema["maxItems"]))


def _validate_enum(schema: Schema, value: Json, path: str, errors: list[FieldError]) -> None:
    allowed = schema.get("enum")
    if allowed and not any(_json_equal(value, option) for option in allowed):
        errors.append(_not_supported(path, value, allowed))


def _validate_object_node(
    schema: Schema, value: dict[str, Json], path: str, errors: list[FieldError]
) -> None:
    count = len(value)
    if "minProperties" in schema and count < schema["minProperties"]:
        min_properties = schema["minProperties"]
        errors.append(
            _invalid(path, count, f"{path} in body should have at least {min_properties} properties")
        )
        return
    if "maxProperties" in schema and count > schema["maxProperties"]:
        errors.append(_too_many(path, count, schema["maxProperties"]))
        return
    properties: dict[str, Schema] = schema.get("properties", {})
    for key, sub in properties.items():
        if key in value:
            _validate(sub, value[key], _join(path, key), errors)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, item in value.items():
            if key not in properties:
                _validate(extra, item, _join(path, key), errors)
    errors.extend(_required(_join(path, key)) for key in schema.get("required", []) if key not in value)


# ---------------------------------------------------------------------------------------------
# x-kubernetes-list-type: set and map items must be unique.


def _validate_lists(schema: Schema, value: Json, path: str, errors: list[FieldError]) -> None:
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        extra = _additional(schema)
        for key, item in value.items():
            sub = properties.get(key, extra)
            if sub is not None:
                _validate_lists(sub, item, _join(path, key), errors)
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            _unique(value, path, errors, key=lambda item: item)
        elif list_type == "map":
            names: list[str] = schema.get("x-kubernetes-list-map-keys", [])
            _unique(
                value,
                path,
                errors,
                key=lambda item: {n: item[n] for n in names if n in item} if isinstance(item, dict) else item,
            )
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                _validate_lists(items, item, f"{path}[{index}]", errors)


def _unique(values: list[Json], path: str, errors: list[FieldError], key: Any) -> None:
    seen: list[Json] = []
    for index, item in enumerate(values):
        identity = key(item)
        if any(_json_equal(identity, earlier) for earlier in seen):
            errors.append(FieldError(ErrorType.DUPLICATE, f"{path}[{index}]", identity))
        else:
            seen.append(identity)


# ---------------------------------------------------------------------------------------------
# x-kubernetes-validations: CEL rules, with ``self`` bound to the node that carries them.


class _InvalidDataError(CELEvalError):
    """A field whose JSON value CEL cannot read as its schema's type (a float in an integer field)."""


class _Evaluator(Evaluator):
    """celpy's evaluator, except that ``has()`` of an unreadable field is an error, not false.

    cel-go's ``has()`` converts the field's value, as kube-apiserver's unstructured values do on
    every access, so the conversion error is the result; ``||`` and ``&&`` absorb it as usual.
    """

    def macro_has_eval(self, exprlist: Any) -> Any:
        [value] = self.visit_children(exprlist)
        if isinstance(value, _InvalidDataError):
            return value
        return celtypes.BoolType(not isinstance(value, CELEvalError))


class _Runner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _Evaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


def _absorbing(operation: Any) -> Any:
    def apply(left: Any, right: Any) -> Any:
        # Two errors: cel-go's result is the left one, where celpy's operators raise a TypeError.
        if isinstance(left, CELEvalError) and isinstance(right, CELEvalError):
            return left
        return operation(left, right)

    return apply


_ENVIRONMENT: Final = celpy.Environment(runner_class=_Runner)
_LOGICAL: Final = {"_||_": _absorbing(celtypes.logical_or), "_&&_": _absorbing(celtypes.logical_and)}
_OLD_SELF: Final = re.compile(r"\boldSelf\b")


@functools.lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(expression), functions=_LOGICAL)


def _to_cel(value: Json, schema: Schema | None, *, is_root: bool = False) -> Any:
    """A JSON value as the API server hands it to CEL, typed by its schema."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float):
        declared = (schema or {}).get("type")
        if declared == "integer" and isinstance(value, float):
            # What kube-apiserver's UnstructuredToVal answers: JSON's 10.0 decodes as a float64.
            return _InvalidDataError("invalid data, expected int, got float64")
        is_double = isinstance(value, float) or declared == "number"
        return celtypes.DoubleType(value) if is_double else celtypes.IntType(value)
    if isinstance(value, str):
        return _string_to_cel(value, (schema or {}).get("format"))
    if isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        return celtypes.ListType([_to_cel(item, items) for item in value])
    if isinstance(value, dict):
        entries = {}
        for key, item in value.items():
            if is_root and key == "metadata" and isinstance(item, dict):
                # Rules see only the name and generateName of a resource's metadata.
                item = {k: v for k, v in item.items() if k in ("name", "generateName")}
            entries[celtypes.StringType(key)] = _to_cel(item, _field_schema(schema, key))
        return celtypes.MapType(entries)
    return celtypes.StringType(str(value))


def _string_to_cel(value: str, fmt: str | None) -> Any:
    try:
        if fmt in ("date-time", "datetime", "date"):
            return celtypes.TimestampType(value if fmt != "date" else value + "T00:00:00Z")
        if fmt == "duration":
            return celtypes.DurationType(value)
    except (ValueError, TypeError):
        pass
    return celtypes.StringType(value)


def _cel_failure(error: BaseException) -> str:
    return str(error.args[0]) if error.args else str(error)


def _evaluate_rules(
    schema: Schema, value: Json, path: str, errors: list[FieldError], *, is_root: bool = False
) -> None:
    if value is None:
        return
    rules: list[dict[str, Any]] = schema.get("x-kubernetes-validations", [])
    node_type = schema.get("type", "")
    if rules:
        activation = {"self": _to_cel(value, schema, is_root=is_root)}
        # Since 1.35 a failed rule shows the value of a scalar only, not the type of an object or array.
        shown = OMIT if node_type in ("object", "array") else value
        for rule in rules:
            _evaluate_rule(rule, activation, node_type, shown, path, errors)
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        extra = _additional(schema)
        for key, item in value.items():
            if key in properties:
                _evaluate_rules(properties[key], item, _join(path, key), errors)
            elif extra is not None:
                _evaluate_rules(extra, item, f"{path}[{key}]", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _evaluate_rules(schema["items"], item, f"{path}[{index}]", errors)


def _evaluate_rule(
    rule: dict[str, Any],
    activation: dict[str, Any],
    node_type: str,
    shown: Json,
    path: str,
    errors: list[FieldError],
) -> None:
    expression = str(rule.get("rule", "")).strip()
    if not expression or _OLD_SELF.search(expression):
        return
    message = str(rule.get("message", "")).strip()
    described = message or expression
    field = path or "<nil>"
    try:
        result = _program(expression).evaluate(activation)
    except CELParseError as exc:
        errors.append(_invalid(field, node_type, f"rule compile error: {exc}"))
        return
    except CELEvalError as exc:
        errors.append(_invalid(field, node_type, f"{_cel_failure(exc)} evaluating rule: {described}"))
        return
    if isinstance(result, CELEvalError):
        errors.append(_invalid(field, node_type, f"{_cel_failure(result)} evaluating rule: {described}"))
        return
    if result is True or (isinstance(result, celtypes.BoolType) and bool(result)):
        return
    detail = message or f"failed rule: {expression}"
    if rule.get("messageExpression"):
        detail = _message_expression(str(rule["messageExpression"]), activation) or detail
    target = path + str(rule.get("fieldPath", "")) if path else str(rule.get("fieldPath", "")).lstrip(".")
    target = target or "<nil>"
    reason = rule.get("reason", "FieldValueInvalid")
    if reason == "FieldValueForbidden":
        errors.append(FieldError(ErrorType.FORBIDDEN, target, "", detail))
    elif reason == "FieldValueRequired":
        errors.append(_required(target, detail))
    elif reason == "FieldValueDuplicate":
        errors.append(FieldError(ErrorType.DUPLICATE, target, shown))
    else:
        errors.append(_invalid(target, shown, detail))


def _message_expression(expression: str, activation: dict[str, Any]) -> str:
    """The rule's computed message; "" (use the static message) when it fails or is unusable."""
    try:
        result = _program(expression).evaluate(activation)
    except (CELParseError, CELEvalError):
        return ""
    if not isinstance(result, str):
        return ""
    text = str(result).strip()
    return "" if "\n" in text else text


# ---------------------------------------------------------------------------------------------
# Entry points.


def _check(schema: Schema, value: Json, path: str, *, is_root: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    _validate(schema, value, path, errors)
    _validate_lists(schema, value, path, errors)
    if any(error.type in _BLOCKING for error in errors):
        errors.append(_invalid("<nil>", None, BLOCKED_RULES_DETAIL))
    else:
        _evaluate_rules(schema, value, path, errors, is_root=is_root)
    return errors


def check_object(crd: dict[str, Any], obj: dict[str, Any], *, version: str | None = None) -> list[FieldError]:
    """The API server's field errors for ``obj`` (a whole custom resource); [] when it is admitted."""
    schema = version_schema(crd, _object_version(crd, obj, version))
    if not schema:
        return []
    return _check(schema, _normalise(obj), "", is_root=True)


def check_status(crd: dict[str, Any], status: Json, *, version: str | None = None) -> list[FieldError]:
    """The field errors of a ``status`` written through the status subresource (paths start at ``status``)."""
    schema = version_schema(crd, version).get("properties", {}).get("status")
    if schema is None:
        return []
    return _check(schema, _normalise(status), "status", is_root=False)


def validate_object(crd: dict[str, Any], obj: dict[str, Any], *, version: str | None = None) -> list[str]:
    """``check_object`` as the API server's texts, e.g. ``spec.alias: Required value``."""
    return [str(error) for error in check_object(crd, obj, version=version)]


def validate_status(crd: dict[str, Any], status: Json, *, version: str | None = None) -> list[str]:
    """``check_status`` as the API server's texts."""
    return [str(error) for error in check_status(crd, status, version=version)]


def invalid_status(crd: dict[str, Any], name: str, errors: list[FieldError]) -> dict[str, Any]:
    """The 422 ``Status`` the API server answers a create or update with when ``errors`` is not empty."""
    names = crd.get("spec", {}).get("names", {})
    group = crd.get("spec", {}).get("group", "")
    kind = names.get("kind", "")
    texts: list[str] = []
    for error in errors:
        if str(error) not in texts:
            texts.append(str(error))
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{kind}.{group} {_go_quote(name)} is invalid: {summary}",
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [{"reason": e.type.value, "message": e.body, "field": e.field} for e in errors],
        },
        "code": 422,
    }
