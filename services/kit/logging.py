"""Structured JSON logs on stdout, with trace_id/span_id and a PII/secret scrubber.

Logs are events, not dumps: bind context once, never log a whole payload. The scrubber is a
last line of defence: sensitive keys are redacted and values that look like a mainland
resident ID, a mobile number, an e-mail address or a bearer token are masked wherever they appear.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from opentelemetry import trace

SENSITIVE_KEYS = frozenset(
    {
        "national_id", "nationalid", "id_number", "mobile", "phone", "email", "full_name", "fullname",
        "birth_date", "birthdate", "address", "password", "secret", "token", "authorization",
        "access_token", "api_key", "pii_key", "blind_index_key",
    }
)  # fmt: skip
REDACTED = "[REDACTED]"

_PATTERNS = (
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9\-_.=]+"), "Bearer [REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[JWT]"),
    (re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), "[ID]"),
    (re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)"), "[MOBILE]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[EMAIL]"),
)
#: Something every pattern above needs ('bearer', 'eyJ', 11+ digits, '@'): text without any
#: of these is returned as is after one scan instead of five substitutions.
_MAYBE_SENSITIVE = re.compile(r"(?i)bearer|eyJ|\d{11}|@")
#: Keys the processors themselves add (clock, level, trace ids): never PII, and hex trace ids
#: may hold digit runs that look like a mobile number or an ID, so they are left unscrubbed.
_OWN_KEYS = frozenset({"timestamp", "level", "trace_id", "span_id"})


def scrub_text(text: str) -> str:
    """Mask anything in free text that looks like PII or a credential."""
    if _MAYBE_SENSITIVE.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SENSITIVE_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


#: Keys seen so far → whether they name a sensitive field (log keys come from code: few).
_KEY_VERDICTS: dict[str, bool] = {}
_PLAIN = (int, float, bool, type(None))


def _sensitive_key(key: str) -> bool:
    verdict = _KEY_VERDICTS.get(key)
    if verdict is None:
        verdict = str(key).lower() in SENSITIVE_KEYS
        if len(_KEY_VERDICTS) < 4096:
            _KEY_VERDICTS[key] = verdict
    return verdict


#: Short strings already searched and found clean: a line's values mostly repeat (method names,
#: status codes, client ids, the service's name), and a set lookup is cheaper than the search.
#: Bounded; a string is only ever added after the search found nothing in it.
_CLEAN: set[str] = set()
_CLEAN_MAX, _CLEAN_LEN = 4096, 200


def scrub_pii(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact sensitive keys and PII-shaped values.

    Runs on every log line (the access log's too): a string is searched once for anything a
    pattern needs before any substitution (a short one found clean is remembered), numbers and
    None are left as they are."""
    for key, value in list(event_dict.items()):
        if key in _OWN_KEYS:
            continue
        if _sensitive_key(key):
            event_dict[key] = REDACTED
        elif type(value) is str:
            if value in _CLEAN:
                continue
            if _MAYBE_SENSITIVE.search(value) is not None:
                event_dict[key] = scrub_text(value)
            elif len(value) <= _CLEAN_LEN and len(_CLEAN) < _CLEAN_MAX:
                _CLEAN.add(value)
        elif not isinstance(value, _PLAIN):
            event_dict[key] = _scrub(value)
    return event_dict


def add_trace_context(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ids, so logs join traces."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(service: str, level: str = "INFO", stream: Any = None) -> None:
    """JSON lines on stdout for structlog and the standard library alike."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
        structlog.processors.format_exc_info,
        scrub_pii,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per JSON line (PrintLogger print()s the line and its newline: two syscalls
        # per line under PYTHONUNBUFFERED, as the image runs); same output.
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.EventRenamer("message"),
                structlog.processors.JSONRenderer(serializer=_orjson_dumps),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "asyncio", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str | None = None) -> Any:
    """A bound structlog logger."""
    return structlog.get_logger(name)


class HotLogger:
    """A logger for a line written on every call (the access log): bound once per structlog
    configuration instead of on every line.

    ``structlog.get_logger`` returns a lazy proxy that, with ``cache_logger_on_first_use`` off
    (needed: tests and ``serve()`` reconfigure logging), builds a new bound logger and its
    ``WriteLogger`` on every method call. This one keeps the bound logger while the configuration
    (processors, logger factory, wrapper class) stays the same object, and binds again when any
    of them changes — so ``configure_logging`` and ``structlog.testing.capture_logs`` still take
    effect on the next line. Its :meth:`info` (the access log's level) goes straight to the bound
    logger's processor chain when the level is enabled (``_proxy_to_logger``, the documented hook
    of structlog's bound loggers: what its ``info`` calls after the level test), ~10 µs a line
    less than looking the method up through the proxy (docs/perf/services.md, wave 8)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._config: tuple[Any, Any, Any] = (None, None, None)
        self._bound: Any = None
        self._info: Any = None

    def _logger(self) -> Any:
        config = structlog.get_config()
        processors, factory, wrapper = self._config
        if (
            config["processors"] is not processors
            or config["logger_factory"] is not factory
            or config["wrapper_class"] is not wrapper
        ):
            # (holds the three: their ids cannot be reused while they are compared)
            self._config = (config["processors"], config["logger_factory"], config["wrapper_class"])
            self._bound = bound = structlog.get_logger(self._name).bind()
            enabled = getattr(bound, "is_enabled_for", None)
            direct = enabled is not None and enabled(logging.INFO) and hasattr(bound, "_proxy_to_logger")
            self._info = functools.partial(bound._proxy_to_logger, "info") if direct else bound.info
        return self._bound

    def info(self, event: str, *args: Any, **fields: Any) -> Any:
        bound = self._logger()
        if args:  # ("%s"-style positional arguments: the bound logger's own method interpolates them)
            return bound.info(event, *args, **fields)
        return self._info(event, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger(), name)
