"""Routes built from the contracts: every ``google.api.http`` rule in the descriptor pool.

Nothing here names a service. :func:`load_contracts` imports every generated ``bank.*``
``_pb2`` module (so the pool is complete), :func:`discover_routes` turns each HTTP rule
(and its ``additional_bindings``) into a :class:`Route`, and :class:`Router` matches a request
path against the compiled path templates (AIP-127 / ``google.api.http`` grammar)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2
from google.protobuf import descriptor, message_factory

from bank.api.v1 import options_pb2

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A path template in the contract does not follow the google.api.http grammar."""


@dataclass(frozen=True)
class PathVariable:
    """One ``{field.path}`` of a template: which request field it sets, from which regex group."""

    field_path: tuple[str, ...]
    group: str
    #: The variable spans several segments (``{name=a/*/b/*}`` or ``**``): '/' is kept.
    multi_segment: bool


@dataclass(frozen=True)
class PathTemplate:
    """A compiled path template."""

    raw: str
    regex: re.Pattern[str]
    verb: str
    variables: tuple[PathVariable, ...]
    literals: int
    #: OpenAPI form: ``/v1/customers/{customer_id}:verify``.
    openapi_path: str

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        values = {}
        for var in self.variables:
            raw = found.group(var.group)
            # A single-segment value may carry an escaped '/'; multi-segment values keep %2F.
            if var.multi_segment:  # keep escaped '/' escaped: it is data, not a separator
                raw = raw.replace("%2F", "%252F").replace("%2f", "%252f")
            values[".".join(var.field_path)] = unquote(raw)
        return values


def _split_top(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError("unbalanced '}'")
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise TemplateError("unbalanced '{'")
    parts.append("".join(current))
    return parts


_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()+,;=@-]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _segment_regex(segment: str) -> tuple[str, int]:
    """(regex, literal count) of one plain segment (no variable)."""
    if segment == "*":
        return r"[^/]+", 0
    if segment == "**":
        return r".+", 0
    if not segment or not _LITERAL.match(segment):
        raise TemplateError(f"bad segment {segment!r}")
    return re.escape(segment), 1


def parse_template(template: str) -> PathTemplate:
    """Compile a ``google.api.http`` path template."""
    if not template.startswith("/"):
        raise TemplateError(f"template {template!r} must start with '/'")
    body = template[1:]
    verb = ""
    # The verb is the text after the last ':' outside braces, in the last segment.
    depth, colon = 0, -1
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == ":" and depth == 0:
            colon = i
    if colon >= 0:
        body, verb = body[:colon], body[colon + 1 :]
        if not _LITERAL.match(verb):
            raise TemplateError(f"bad verb {verb!r} in {template!r}")
    pieces: list[str] = []
    openapi: list[str] = []
    variables: list[PathVariable] = []
    literals = 0
    segments = _split_top(body, "/")
    for index, segment in enumerate(segments):
        if segment == "**" and index != len(segments) - 1:
            raise TemplateError(f"'**' must be the last segment in {template!r}")
        if segment.startswith("{"):
            if not segment.endswith("}"):
                raise TemplateError(f"bad variable {segment!r} in {template!r}")
            inner = segment[1:-1]
            name, _, sub = inner.partition("=")
            if not _FIELD_PATH.match(name):
                raise TemplateError(f"bad field path {name!r} in {template!r}")
            sub_segments = sub.split("/") if sub else ["*"]
            sub_regex = []
            for s in sub_segments:
                rx, lit = _segment_regex(s)
                sub_regex.append(rx)
                literals += lit
            group = f"v{len(variables)}"
            multi = len(sub_segments) > 1 or "**" in sub_segments
            variables.append(PathVariable(tuple(name.split(".")), group, multi))
            pieces.append(f"(?P<{group}>{'/'.join(sub_regex)})")
            openapi.append("{" + name + "}")
        else:
            rx, lit = _segment_regex(segment)
            literals += lit
            pieces.append(rx)
            openapi.append(segment)
    regex = re.compile("^/" + "/".join(pieces) + "$")
    return PathTemplate(
        raw=template,
        regex=regex,
        verb=verb,
        variables=tuple(variables),
        literals=literals,
        openapi_path="/" + "/".join(openapi) + (f":{verb}" if verb else ""),
    )


def capability_of(package: str) -> str:
    """``bank.customer.v1`` → ``customer``: the key of the backend that serves the package."""
    parts = package.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "bank" else package


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    method: descriptor.MethodDescriptor
    full_method: str
    input_class: Any
    output_class: Any
    scopes: tuple[str, ...]
    capability: str
    group: str
    #: Safe to retry on UNAVAILABLE (reads only).
    idempotent: bool
    #: The request message's top-level ``request_id`` field (AIP-155), when it has one.
    request_id_field: descriptor.FieldDescriptor | None
    bound_fields: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def direct_path_fields(self) -> tuple[tuple[str, str], ...] | None:
        """``(path variable, field name)`` pairs when the rule has no body and every path
        variable is a top-level, singular string field: such a request (without query
        parameters) is built by setting those fields, with no JSON round trip."""
        if self.body:
            return None
        pairs = []
        for var in self.template.variables:
            if len(var.field_path) != 1:
                return None
            fd = self.method.input_type.fields_by_name.get(var.field_path[0])
            if fd is None or fd.type != fd.TYPE_STRING or _is_repeated(fd):
                return None
            pairs.append((var.field_path[0], fd.name))
        return tuple(pairs)

    @property
    def operation_id(self) -> str:
        service = self.method.containing_service
        return f"{service.name}_{self.method.name}"


def _route_group(http_method: str, scopes: Iterable[str]) -> str:
    if any(s.endswith(":admin") for s in scopes):
        return "admin"
    return "reads" if http_method == "GET" else "writes"


def contract_module_names() -> list[str]:
    """Every generated ``bank.*`` ``_pb2`` module, wherever ``bank``'s path reaches."""
    import bank

    names: set[str] = set()
    for root in bank.__path__:
        base = Path(root)
        for path in base.rglob("*_pb2.py"):
            rel = path.relative_to(base.parent).with_suffix("")
            names.add(".".join(rel.parts))
    return sorted(names)


def load_contracts(extra_modules: Iterable[str] = ()) -> list[descriptor.FileDescriptor]:
    """Import every contract module (completing the descriptor pool); their file descriptors."""
    modules: list[ModuleType] = [importlib.import_module(n) for n in [*contract_module_names(), *extra_modules]]
    return [m.DESCRIPTOR for m in modules]


def _rule_bindings(rule: Any) -> Iterator[tuple[str, str, str, str]]:
    """(HTTP method, path, body, response_body) of a rule and its additional bindings."""
    for binding in [rule, *rule.additional_bindings]:
        kind = binding.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            yield binding.custom.kind.upper(), binding.custom.path, binding.body, binding.response_body
        else:
            yield kind.upper(), getattr(binding, kind), binding.body, binding.response_body


def routes_of_method(method: descriptor.MethodDescriptor) -> list[Route]:
    options = method.GetOptions()
    if options.Extensions[options_pb2.internal] or not options.HasExtension(annotations_pb2.http):
        return []
    if method.client_streaming or method.server_streaming:
        return []  # the HTTP edge is unary only
    rule = options.Extensions[annotations_pb2.http]
    service = method.containing_service
    scopes = tuple(options.Extensions[options_pb2.required_scopes])
    input_class = message_factory.GetMessageClass(method.input_type)
    output_class = message_factory.GetMessageClass(method.output_type)
    request_id = method.input_type.fields_by_name.get("request_id")
    if request_id is not None and (request_id.type != request_id.TYPE_STRING or _is_repeated(request_id)):
        request_id = None
    routes = []
    for http_method, path, body, response_body in _rule_bindings(rule):
        template = parse_template(path)
        if body and body != "*" and body not in method.input_type.fields_by_name:
            raise TemplateError(f"{method.full_name}: body field {body!r} does not exist")
        bound = {".".join(v.field_path) for v in template.variables}
        if body and body != "*":
            bound.add(body)
        routes.append(
            Route(
                http_method=http_method,
                template=template,
                body=body,
                response_body=response_body,
                method=method,
                full_method=f"/{service.full_name}/{method.name}",
                input_class=input_class,
                output_class=output_class,
                scopes=scopes,
                capability=capability_of(service.file.package),
                group=_route_group(http_method, scopes),
                idempotent=http_method == "GET",
                request_id_field=request_id,
                bound_fields=frozenset(bound),
            )
        )
    return routes


def _is_repeated(fd: descriptor.FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def discover_routes(files: Iterable[descriptor.FileDescriptor]) -> list[Route]:
    """Every HTTP binding of every annotated, non-internal RPC in the given files."""
    routes: list[Route] = []
    seen: set[str] = set()
    for file in files:
        if file.name in seen:
            continue
        seen.add(file.name)
        for service in file.services_by_name.values():
            for method in service.methods:
                routes.extend(routes_of_method(method))
    return routes


@dataclass
class Match:
    route: Route
    params: dict[str, str]


class Router:
    """Matches (HTTP method, raw path) to a route; the verb is split off before matching."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._by_key: dict[tuple[str, str], list[Route]] = {}
        for route in self.routes:
            self._by_key.setdefault((route.http_method, route.template.verb), []).append(route)
        for candidates in self._by_key.values():
            # Most literal segments first, so /v1/segments:refresh wins over /v1/{x}.
            candidates.sort(key=lambda r: (-r.template.literals, len(r.template.variables)))
        self._check_conflicts()

    def _check_conflicts(self) -> None:
        seen: dict[tuple[str, str, str], str] = {}
        for route in self.routes:
            shape = re.sub(r"\{[^}]*\}", "{}", route.template.raw)
            key = (route.http_method, shape, route.template.verb)
            if key in seen and seen[key] != route.full_method:
                raise TemplateError(f"{route.full_method} and {seen[key]} both bind {route.http_method} {shape}")
            seen[key] = route.full_method

    @staticmethod
    def _split_verb(path: str) -> tuple[str, str]:
        last = path.rfind("/")
        colon = path.rfind(":")
        if colon > last:
            return path[:colon], path[colon + 1 :]
        return path, ""

    def _match_in(self, method: str, path: str) -> Match | None:
        base, verb = self._split_verb(path)
        for candidate_path, candidate_verb in ((base, verb), (path, "")) if verb else ((path, ""),):
            for route in self._by_key.get((method, candidate_verb), ()):
                params = route.template.match(candidate_path)
                if params is not None:
                    return Match(route, params)
        return None

    def match(self, method: str, path: str) -> Match | None:
        return self._match_in(method, path)

    def allowed_methods(self, path: str) -> list[str]:
        """Methods that would match this path (for 405 and CORS)."""
        methods = {r.http_method for r in self.routes}
        return sorted(m for m in methods if self._match_in(m, path) is not None)
