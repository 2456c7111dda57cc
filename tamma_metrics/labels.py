"""The one place label values are made safe before they reach an instrument.

Whatever a caller sends (an agent's free text, a lone surrogate, a newline) comes
out as a short lower-case string of a safe character set, so no input can break the
exposition or the scrape.
"""

from __future__ import annotations

import re
from typing import Any

from .conf import app_settings

EMPTY_VALUE = "unknown"
_UNSAFE = re.compile(r"[^a-z0-9_.:/+\-]+")


def normalise(value: Any) -> str:
    """Return ``value`` as a safe label value: lower case, [a-z0-9_.:/+-], bounded length."""
    text = value if isinstance(value, str) else str(value)
    text = _UNSAFE.sub("_", text.strip().lower()).strip("_")
    text = text[: app_settings.MAX_LABEL_VALUE_LENGTH]
    return text or EMPTY_VALUE


def normalise_all(values: tuple[Any, ...]) -> tuple[str, ...]:
    """Normalise every value of one label set."""
    return tuple(normalise(value) for value in values)
