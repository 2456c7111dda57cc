"""What every writing endpoint does with a request body before it looks at an item: the
size, the framing, the nesting and the one-or-batch shape, each refused with a clear
status; and a database that fails answered 503, not 500."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from rest_framework import status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import access
from ..conf import app_settings

__all__ = [
    "MAX_JSON_DEPTH",
    "DatabaseAwareView",
    "LenientJSONParser",
    "framing",
    "items",
    "strict_json",
]

logger = logging.getLogger(__name__)

# A batch nests four deep ({"events": [{"tokens": {...}}]}); leave room.
MAX_JSON_DEPTH = 16
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class LenientJSONParser(JSONParser):
    """Accept NaN and Infinity literals so the field at fault can be named (400), instead
    of failing the whole body; refuse nesting deeper than any item has (400) before
    parsing, so no body can drive the parser into a RecursionError (a 500)."""

    strict = False

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None):
        body = stream.read() if stream is not None else b""
        if _nesting(body) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
        data = super().parse(io.BytesIO(body), media_type, parser_context)
        _refuse_lone_surrogates(body, data)
        return data


def strict_json(body: bytes) -> Any:
    """``body`` parsed as JSON as the platforms send it (webhooks): nesting as deep as
    WEBHOOK_MAX_DEPTH at most, no NaN or Infinity, no number too large for a float, no
    lone surrogate; ParseError (400) saying which."""
    depth = int(app_settings.WEBHOOK_MAX_DEPTH)
    if _nesting(body, depth) > depth:
        raise ParseError(f"JSON nested deeper than {depth} levels.")
    try:
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ParseError(f"The body is not JSON: {exc}"[:200]) from None
    _refuse_lone_surrogates(body, data)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} is too large a number")
    return number


# \uD800-\uDFFF escapes: the only way a JSON text can carry a surrogate (the body's bytes
# are decoded as UTF-8, which has none). Paired ones make one character; a lone one is
# a string no answer can echo and no database column can store.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(body: bytes, data: Any) -> None:
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(data):
        raise ParseError("The body holds a lone surrogate (\\ud800-\\udfff): not Unicode text.")


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _nesting(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``body``'s arrays and objects nest (counting stops past the limit).

    Brackets inside strings do not count: escaped backslashes and quotes are dropped,
    then every other piece between quotes is outside a string. All of it C-speed but
    the walk over the brackets, which stops as soon as the limit is passed."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    depth = deepest = 0
    for byte in outside.translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _too_large(detail: str) -> Response:
    return Response({"detail": detail}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


def framing(request: Request, body_limit: int) -> Response | None:
    """The Response that refuses a body before it is read: chunked (411: Django reads a
    body by its Content-Length, so it would arrive empty) or over ``body_limit`` (413)."""
    meta = request.META
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get(
        "CONTENT_LENGTH"
    ):
        return Response(
            {
                "detail": "Send the body with a Content-Length; chunked transfer encoding is "
                "not supported."
            },  # fmt: skip
            status=status.HTTP_411_LENGTH_REQUIRED,
        )
    length = meta.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > body_limit:
        return _too_large(f"The body exceeds {body_limit} bytes.")
    return None


def items(request: Request, key: str, limit: int) -> list[Any] | Response:
    """The items of a body that is one object or ``{key: [...]}`` (at most ``limit``),
    or the Response that refuses it (411, 413); ParseError (400) for a bad shape."""
    body_limit = app_settings.INGEST_MAX_BODY_BYTES
    refused = framing(request, body_limit)
    if refused is not None:
        return refused
    try:
        payload = request.data
    except RequestDataTooBig:
        return _too_large(f"The body exceeds {body_limit} bytes.")
    if isinstance(payload, dict) and key in payload:
        if set(payload) != {key} or not isinstance(payload[key], list):
            raise ParseError(f'A batch is {{"{key}": [ ... ]}} and nothing else.')
        found = payload[key]
        if not found:
            raise ParseError("The batch is empty.")
    elif isinstance(payload, dict):
        found = [payload]
    else:
        raise ParseError(f'Send one object or {{"{key}": [ ... ]}}.')
    if len(found) > limit:
        return _too_large(f"At most {limit} {key} per request.")
    return found


class DatabaseAwareView(APIView):
    """An API view that answers 503 with Retry-After, in JSON, when the database fails
    (down, locked past its timeout), rather than a 500 page."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DatabaseError | access.Unavailable):
            logger.warning("tamma_metrics: API request failed, database unavailable: %s", exc)
            response = Response(
                {"detail": "The database is unavailable; try again shortly."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
            response["Retry-After"] = str(access.Unavailable.retry_after)
            return response
        return super().handle_exception(exc)
