#!/usr/bin/env python3
"""Generate JSON Schemas for the SignalWire RELAY protocol from signalwire-sdk.

The schemas in relay-protocol/relay/ are derived from two files of the public
Python SDK (PyPI package ``signalwire-sdk``):

* ``signalwire/relay/protocol_types_generated.py``: one TypedDict per RELAY
  method, ``<Method>Params`` and ``<Method>Result``.  Each becomes
  ``<method>.params.json`` / ``<method>.result.json``.
* ``signalwire/relay/event.py``: one dataclass per event type, listed in
  ``EVENT_CLASS_MAP``.  Each entry becomes ``<event_type>.event.json``, which
  describes the ``params`` object of a ``signalwire.event`` frame: the keys
  the class's ``from_payload`` reads, typed like the dataclass fields they
  fill.

The SDK is found with importlib and its files are read with ``ast``; no SDK
module is imported.  The output is deterministic: same SDK version, same bytes.

    python3 relay-protocol/generate.py            # (re)write relay-protocol/relay/
    python3 relay-protocol/generate.py --check    # compare, exit 1 on drift
    python3 relay-protocol/generate.py --out DIR  # write (or --check) DIR instead

Standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import io
import json
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DIST_NAME = "signalwire-sdk"
PINNED_VERSION = "3.7.5"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
TYPES_FILE = "signalwire/relay/protocol_types_generated.py"
EVENTS_FILE = "signalwire/relay/event.py"

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "relay"
DEFAULT_OUT_DISPLAY = "relay-protocol/relay"

EXIT_DRIFT = 1
EXIT_NO_SDK = 2

KINDS = {"Params": "params", "Result": "result"}

SCALARS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "int": {"type": "integer"},
    # An int is a valid JSON number, so float fields accept integers too.
    "float": {"type": "number"},
}
ANY_NAMES = {"Any", "object"}
LIST_NAMES = {"list", "List", "Sequence", "MutableSequence", "Collection", "Iterable"}
SET_NAMES = {"set", "Set", "frozenset", "FrozenSet", "AbstractSet", "MutableSet"}
TUPLE_NAMES = {"tuple", "Tuple"}
DICT_NAMES = {"dict", "Dict", "Mapping", "MutableMapping"}
# Wrappers whose first argument is the real type.
PASSTHROUGH = {"Required", "NotRequired", "ReadOnly", "Annotated", "Final", "ClassVar"}

NON_IDENT_RE = re.compile(
    r"#\s*non-identifier field\s+(?P<key>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s*:\s*(?P<ann>.+?)\s*$"
)
BACKTICK_RE = re.compile(r"`([^`\s]+)`")
DOTTED_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
SWITCHBLADE_RE = re.compile(r"Extracted from switchblade\s+`([^`]+)`")
DERIVED_RE = re.compile(r"derived from [^(]*\(``([^`]+)``\)")


class SdkMissing(Exception):
    """The SDK (or one of the files we read) is not available."""


class GenerationError(Exception):
    """The SDK source has a shape this generator does not understand."""


@dataclass
class Diagnostics:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)


# ---------------------------------------------------------------------------
# Locating the SDK
# ---------------------------------------------------------------------------


@dataclass
class Sdk:
    version: str
    types_path: Path
    events_path: Path


def locate_sdk() -> Sdk:
    hint = f"pip install {DIST_NAME}=={PINNED_VERSION}"
    try:
        spec = importlib.util.find_spec("signalwire")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SdkMissing(
            f"the Python package 'signalwire' ({DIST_NAME}) is not installed for "
            f"{sys.executable}; install it with: {hint}"
        )
    try:
        version = importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        raise SdkMissing(
            f"found a 'signalwire' package but no {DIST_NAME} distribution metadata "
            f"for {sys.executable}; install it with: {hint}"
        ) from None
    for location in spec.submodule_search_locations:
        root = Path(location).parent
        types_path = root / TYPES_FILE
        events_path = root / EVENTS_FILE
        if types_path.is_file() and events_path.is_file():
            return Sdk(version, types_path, events_path)
    raise SdkMissing(
        f"{DIST_NAME} {version} is installed but lacks {TYPES_FILE} or {EVENTS_FILE}; "
        f"install the pinned version with: {hint}"
    )


# ---------------------------------------------------------------------------
# Small AST helpers
# ---------------------------------------------------------------------------


def parse_expr(text: str) -> ast.expr:
    return ast.parse(text.strip(), mode="eval").body


def simple_name(node: ast.AST) -> str | None:
    """``Any`` -> "Any", ``typing.Any`` -> "Any", anything else -> None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def subscript_args(node: ast.Subscript) -> list[ast.expr]:
    s = node.slice
    if isinstance(s, ast.Tuple):
        return list(s.elts)
    return [s]


def const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def comments_by_line(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


# ---------------------------------------------------------------------------
# Type annotations -> JSON Schema
# ---------------------------------------------------------------------------


@dataclass
class TypedDictInfo:
    name: str
    doc: str
    fields: dict[str, ast.expr]  # own fields only (key -> annotation)
    bases: list[str]


class TypeMapper:
    """Maps annotation ASTs of one module to JSON Schema fragments."""

    def __init__(
        self,
        typeddicts: dict[str, TypedDictInfo],
        aliases: dict[str, ast.expr],
        diag: Diagnostics,
    ) -> None:
        self.typeddicts = typeddicts
        self.aliases = aliases
        self.diag = diag

    def unmapped(self, node: ast.AST, where: str) -> dict[str, Any]:
        self.diag.warn(f"{where}: cannot map type {ast.unparse(node)!r}; using {{}} (any value)")
        return {}

    def typeddict_fields(self, name: str, stack: tuple[str, ...] = ()) -> dict[str, ast.expr]:
        if name in stack:
            raise GenerationError(f"TypedDict inheritance cycle through {name}")
        info = self.typeddicts[name]
        merged: dict[str, ast.expr] = {}
        for base in info.bases:
            merged.update(self.typeddict_fields(base, stack + (name,)))
        merged.update(info.fields)
        return merged

    def properties(self, name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        return {
            key: self.map(ann, f"{name}.{key}", seen + (name,))
            for key, ann in sorted(self.typeddict_fields(name).items())
        }

    def map(self, node: ast.AST, where: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if isinstance(node, ast.Constant):
            if node.value is None:
                return {"type": "null"}
            if isinstance(node.value, str):  # string (forward-reference) annotation
                try:
                    inner = parse_expr(node.value)
                except SyntaxError:
                    return self.unmapped(node, where)
                return self.map(inner, where, seen)
            return self.unmapped(node, where)

        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.union(flatten_bitor(node), where, seen)

        if isinstance(node, (ast.Name, ast.Attribute)):
            name = simple_name(node)
            assert name is not None
            if name in SCALARS:
                return dict(SCALARS[name])
            if name in ANY_NAMES:
                return {}
            if name == "NoneType":
                return {"type": "null"}
            if name in LIST_NAMES or name in TUPLE_NAMES:
                return {"type": "array"}
            if name in SET_NAMES:
                return {"type": "array", "uniqueItems": True}
            if name in DICT_NAMES:
                return {"type": "object"}
            if name in self.typeddicts:
                if name in seen:
                    self.diag.warn(f"{where}: recursive reference to {name}; using {{}}")
                    return {}
                return {
                    "type": "object",
                    "properties": self.properties(name, seen),
                    "additionalProperties": True,
                }
            if name in self.aliases:
                if name in seen:
                    self.diag.warn(f"{where}: recursive type alias {name}; using {{}}")
                    return {}
                return self.map(self.aliases[name], where, seen + (name,))
            return self.unmapped(node, where)

        if isinstance(node, ast.Subscript):
            base = simple_name(node.value)
            args = subscript_args(node)
            if base in PASSTHROUGH and args:
                return self.map(args[0], where, seen)
            if base == "Optional" and len(args) == 1:
                return self.union([args[0], ast.Constant(None)], where, seen)
            if base == "Union":
                members: list[ast.expr] = []
                for a in args:
                    members.extend(flatten_bitor(a))
                return self.union(members, where, seen)
            if base in LIST_NAMES and len(args) == 1:
                return {"type": "array", "items": self.map(args[0], where, seen)}
            if base in SET_NAMES and len(args) == 1:
                return {
                    "type": "array",
                    "items": self.map(args[0], where, seen),
                    "uniqueItems": True,
                }
            if base in TUPLE_NAMES:
                if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                    return {"type": "array", "items": self.map(args[0], where, seen)}
                items = [self.map(a, where, seen) for a in args]
                return {
                    "type": "array",
                    "prefixItems": items,
                    "minItems": len(items),
                    "maxItems": len(items),
                }
            if base in DICT_NAMES:
                return {"type": "object"}
            if base == "Literal":
                values = literal_values(args)
                if values is None:
                    return self.unmapped(node, where)
                return {"enum": values}
            return self.unmapped(node, where)

        return self.unmapped(node, where)

    def union(self, members: list[ast.expr], where: str, seen: tuple[str, ...]) -> dict[str, Any]:
        schemas = [self.map(m, where, seen) for m in members]
        nullable = any(s == {"type": "null"} for s in schemas)
        others: list[dict[str, Any]] = []
        for s in schemas:
            if s != {"type": "null"} and s not in others:
                others.append(s)
        if any(s == {} for s in others):
            return {}  # Any already admits every value, null included
        if not others:
            return {"type": "null"}
        if len(others) == 1:
            result = dict(others[0])
        elif all(set(s) == {"type"} for s in others):
            types: list[str] = []
            for s in others:
                for t in s["type"] if isinstance(s["type"], list) else [s["type"]]:
                    if t not in types:
                        types.append(t)
            result = {"type": types}
        elif all(set(s) == {"enum"} for s in others):
            values: list[Any] = []
            for s in others:
                for v in s["enum"]:
                    if v not in values:
                        values.append(v)
            result = {"enum": values}
        else:
            result = {"anyOf": others}
        if nullable:
            result = add_null(result)
        return result


def flatten_bitor(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return flatten_bitor(node.left) + flatten_bitor(node.right)
    return [node]


def literal_values(args: list[ast.expr]) -> list[Any] | None:
    values: list[Any] = []
    for a in args:
        if isinstance(a, ast.Subscript) and simple_name(a.value) == "Literal":
            inner = literal_values(subscript_args(a))
            if inner is None:
                return None
            values.extend(inner)
        elif isinstance(a, ast.Constant) and (
            a.value is None or isinstance(a.value, (str, int, float, bool))
        ):
            values.append(a.value)
        else:
            return None
    return values


def add_null(schema: dict[str, Any]) -> dict[str, Any]:
    s = dict(schema)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        s["type"] = [t for t in types if t != "null"] + ["null"]
        if "enum" in s and None not in s["enum"]:
            s["enum"] = list(s["enum"]) + [None]
        return s
    if set(s) == {"enum"}:
        if None not in s["enum"]:
            s["enum"] = list(s["enum"]) + [None]
        return s
    if set(s) == {"anyOf"}:
        s["anyOf"] = list(s["anyOf"]) + [{"type": "null"}]
        return s
    return {"anyOf": [s, {"type": "null"}]}


def is_permissive(properties: dict[str, Any]) -> bool:
    """True when no field carries a type (all Any, or no fields at all)."""
    return all(p == {} for p in properties.values())


# ---------------------------------------------------------------------------
# protocol_types_generated.py -> params / result documents
# ---------------------------------------------------------------------------


def read_types_module(
    source: str, diag: Diagnostics
) -> tuple[dict[str, TypedDictInfo], dict[str, ast.expr], list[str]]:
    """Return (TypedDicts, aliases, names in source order)."""
    tree = ast.parse(source)
    comments = comments_by_line(source)
    typeddicts: dict[str, TypedDictInfo] = {}
    aliases: dict[str, ast.expr] = {}
    order: list[str] = []

    def is_typeddict_base(b: ast.expr) -> bool:
        return simple_name(b) == "TypedDict"

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            base_names = [simple_name(b) for b in node.bases]
            td_bases = [n for n in base_names if n and n in typeddicts]
            if not (any(is_typeddict_base(b) for b in node.bases) or td_bases):
                continue
            fields: dict[str, ast.expr] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    fields[stmt.target.id] = stmt.annotation
            # Keys that are not Python identifiers only survive as comments.
            end = node.end_lineno or node.lineno
            for line in range(node.lineno, end + 1):
                text = comments.get(line)
                if not text:
                    continue
                m = NON_IDENT_RE.match(text)
                if not m:
                    continue
                key = ast.literal_eval(m.group("key"))
                try:
                    fields[key] = parse_expr(m.group("ann"))
                except SyntaxError:
                    fields[key] = ast.Constant(m.group("ann"))
                    diag.warn(f"{node.name}: unparsable annotation in comment {text!r}")
            typeddicts[node.name] = TypedDictInfo(
                node.name, ast.get_docstring(node) or "", fields, td_bases
            )
            order.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if simple_name(node.annotation) == "TypeAlias" and node.value is not None:
                aliases[node.target.id] = node.value
                order.append(node.target.id)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
            node.targets[0], ast.Name
        ):
            name = node.targets[0].id
            value = node.value
            # Functional TypedDict: X = TypedDict("X", {"key": type, ...}, total=False)
            if (
                isinstance(value, ast.Call)
                and simple_name(value.func) == "TypedDict"
                and len(value.args) >= 2
                and isinstance(value.args[1], ast.Dict)
            ):
                fields = {}
                for k, v in zip(value.args[1].keys, value.args[1].values):
                    key = const_str(k)
                    if key is None:
                        diag.warn(f"{name}: non-string key in functional TypedDict; skipped")
                        continue
                    fields[key] = v
                typeddicts[name] = TypedDictInfo(name, "", fields, [])
                order.append(name)
            elif not name.startswith("_") and (
                isinstance(value, (ast.Subscript, ast.BinOp))
                or (isinstance(value, ast.Name) and (value.id in typeddicts or value.id in aliases))
            ):
                aliases[name] = value  # implicit alias: X = dict[str, Any]
                order.append(name)
        elif hasattr(ast, "TypeAlias") and isinstance(node, getattr(ast, "TypeAlias")):
            aliases[node.name.id] = node.value  # Python 3.12 `type X = ...`
            order.append(node.name.id)
    return typeddicts, aliases, order


def normalize_method(text: str) -> str:
    return re.sub(r"[._]", "", text).lower()


def method_from_doc(doc: str, stem: str) -> str | None:
    """The method a docstring names: the first backticked or dotted token that
    spells the class stem (``calling.play_and_collect.stop`` <-> CallingPlayAndCollectStop)."""
    want = stem.lower()
    for rx in (BACKTICK_RE, DOTTED_RE):
        for token in rx.findall(doc):
            if re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", token) and normalize_method(token) == want:
                return token
    return None


def method_from_class_name(stem: str) -> str:
    words = re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", stem)
    if len(words) < 2:
        return stem.lower()
    return words[0].lower() + "." + "_".join(w.lower() for w in words[1:])


def provenance_from_doc(doc: str) -> str:
    m = SWITCHBLADE_RE.search(doc)
    if m:
        return f"from switchblade {m.group(1)}"
    d = DERIVED_RE.search(doc)
    if d:
        return f"no switchblade source; derived from {d.group(1)}"
    return "no switchblade source named"


def method_documents(sdk: Sdk, diag: Diagnostics) -> dict[str, dict[str, Any]]:
    source = sdk.types_path.read_text(encoding="utf-8")
    typeddicts, aliases, order = read_types_module(source, diag)
    mapper = TypeMapper(typeddicts, aliases, diag)

    entries: list[tuple[str, str, str]] = []  # (name, stem, kind)
    for name in order:
        for suffix, kind in KINDS.items():
            if name.endswith(suffix) and len(name) > len(suffix):
                entries.append((name, name[: -len(suffix)], kind))

    # Method names from docstrings first; aliases (no docstring) borrow their
    # sibling's (FooParams <-> FooResult), else the class name is spelled out.
    doc_methods: dict[str, str] = {}
    for name, stem, _kind in entries:
        info = typeddicts.get(name)
        if info and info.doc:
            m = method_from_doc(info.doc, stem)
            if m:
                doc_methods[name] = m
            else:
                diag.warn(f"{name}: docstring names no method matching the class name")

    docs: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name, stem, kind in entries:
        origin_note: str
        if name in doc_methods:
            method = doc_methods[name]
            origin_note = provenance_from_doc(typeddicts[name].doc)
        else:
            sibling = next(
                (
                    other
                    for other, other_stem, other_kind in entries
                    if other_stem == stem and other_kind != kind and other in doc_methods
                ),
                None,
            )
            if sibling:
                method = doc_methods[sibling]
                how = f"method name from {sibling}"
            else:
                method = method_from_class_name(stem)
                how = "method name spelled from the class name"
                diag.note(f"{name}: no docstring names its method; using {method!r} ({how})")
            origin_note = how
        if name in typeddicts:
            properties = mapper.properties(name, ())
            shape = ""
        else:
            alias = aliases[name]
            text = const_str(alias) or ast.unparse(alias)
            shape = f"TypeAlias = {text!r}; "
            resolved = mapper.map(alias, name, ())
            if resolved.get("type") != "object" and resolved != {}:
                diag.warn(f"{name}: alias {text!r} is not an object type; emitting an open object")
            properties = dict(resolved.get("properties", {}))
        file_name = f"{method}.{kind}.json"
        if file_name in docs:
            raise GenerationError(f"{name} and {origin[file_name]} both describe {method} {kind}")
        origin[file_name] = name
        doc: dict[str, Any] = {
            "$schema": DIALECT,
            "$id": f"relay/{file_name}",
            "title": f"{method} {kind}",
            "x-method": method,
            "x-kind": kind,
            "x-source": f"{DIST_NAME} {sdk.version} {TYPES_FILE} {name} ({shape}{origin_note})",
            "type": "object",
            "properties": properties,
            "additionalProperties": True,
        }
        if is_permissive(properties):
            doc["x-permissive"] = True
        docs[file_name] = doc
    return docs


# ---------------------------------------------------------------------------
# event.py -> event documents
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outer:
    """The whole signalwire.event params ({event_type, params, ...})."""


@dataclass(frozen=True)
class Reads:
    """Key paths (inside the event's params) a value is read from, first is primary."""

    paths: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class EventObj:
    """The result of SomeEvent.from_payload(payload)."""

    cls: str


class EventModule:
    def __init__(self, source: str, diag: Diagnostics) -> None:
        self.tree = ast.parse(source)
        self.diag = diag
        self.classes: dict[str, ast.ClassDef] = {
            n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)
        }
        self._mapping: dict[str, dict[str, Reads]] = {}
        self.mapper = TypeMapper({}, {}, diag)

    def event_map(self) -> dict[str, str]:
        for node in self.tree.body:
            target: ast.expr | None = None
            value: ast.expr | None = None
            if isinstance(node, ast.AnnAssign):
                target, value = node.target, node.value
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            if isinstance(target, ast.Name) and target.id == "EVENT_CLASS_MAP":
                if not isinstance(value, ast.Dict):
                    raise GenerationError("EVENT_CLASS_MAP is not a dict literal")
                out: dict[str, str] = {}
                for k, v in zip(value.keys, value.values):
                    key = const_str(k)
                    cls = simple_name(v) if v is not None else None
                    if key is None or cls is None:
                        raise GenerationError("EVENT_CLASS_MAP has a non-literal entry")
                    out[key] = cls
                return out
        raise GenerationError(f"no EVENT_CLASS_MAP in {EVENTS_FILE}")

    def bases(self, cls: str) -> list[str]:
        return [n for b in self.classes[cls].bases if (n := simple_name(b)) in self.classes]

    def fields(self, cls: str) -> dict[str, ast.expr]:
        out: dict[str, ast.expr] = {}
        for base in self.bases(cls):
            out.update(self.fields(base))
        for stmt in self.classes[cls].body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                out[stmt.target.id] = stmt.annotation
        return out

    def from_payload(self, cls: str) -> tuple[str, ast.FunctionDef] | None:
        for stmt in self.classes[cls].body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "from_payload":
                return cls, stmt
        for base in self.bases(cls):
            found = self.from_payload(base)
            if found:
                return found
        return None

    def mapping(self, cls: str) -> dict[str, Reads]:
        """Dataclass field -> where from_payload reads it in params."""
        if cls in self._mapping:
            return self._mapping[cls]
        found = self.from_payload(cls)
        if found is None:
            raise GenerationError(f"{cls} has no from_payload")
        owner, fn = found
        if owner != cls:
            result = self.mapping(owner)
            self._mapping[cls] = result
            return result
        args = [a.arg for a in fn.args.args]
        if len(args) < 2:
            raise GenerationError(f"{cls}.from_payload has no payload argument")
        env: dict[str, Any] = {args[1]: Outer()}
        result = {}
        for stmt in fn.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                stmt.targets[0], ast.Name
            ):
                env[stmt.targets[0].id] = self.eval(stmt.value, env, cls)
            elif isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Call):
                call = stmt.value
                if simple_name(call.func) not in ("cls", cls):
                    self.diag.warn(f"{cls}.from_payload returns {ast.unparse(call.func)}(...); not analysed")
                    continue
                for kw in call.keywords:
                    if kw.arg is None:
                        self.diag.warn(f"{cls}.from_payload: **kwargs not analysed")
                        continue
                    value = self.eval(kw.value, env, cls)
                    result[kw.arg] = value if isinstance(value, Reads) else Reads()
        self._mapping[cls] = result
        return result

    def eval(self, node: ast.expr, env: dict[str, Any], cls: str) -> Any:
        if isinstance(node, ast.Name):
            return env.get(node.id, Reads())
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method == "get" and node.args:
                key = const_str(node.args[0])
                base = self.eval(node.func.value, env, cls)
                fallback = (
                    self.eval(node.args[1], env, cls) if len(node.args) > 1 else Reads()
                )
                fallback_paths = fallback.paths if isinstance(fallback, Reads) else ()
                if key is None:
                    self.diag.warn(f"{cls}.from_payload: non-literal key in {ast.unparse(node)}")
                    return Reads(fallback_paths)
                if isinstance(base, Outer):
                    # payload.get("params") is the event's params object; other
                    # outer keys (event_type) belong to the envelope.
                    return Reads(((),)) if key == "params" else Reads()
                if isinstance(base, Reads):
                    primary = tuple(p + (key,) for p in base.paths)
                    return Reads(primary + tuple(p for p in fallback_paths if p not in primary))
                return Reads()
            if method == "from_payload":
                owner = simple_name(node.func.value)
                if owner in self.classes and node.args and isinstance(
                    self.eval(node.args[0], env, cls), Outer
                ):
                    return EventObj(owner)
            return Reads()
        if isinstance(node, ast.Attribute):
            base = self.eval(node.value, env, cls)
            if isinstance(base, EventObj):
                return self.mapping(base.cls).get(node.attr, Reads())
            return Reads()
        return Reads()


def build_tree(
    cls: str, leaves: dict[tuple[str, ...], tuple[dict[str, Any], str]], diag: Diagnostics
) -> dict[str, Any]:
    """Turn {key path: (schema, dataclass field)} into nested ``properties``."""
    root: dict[str, Any] = {"properties": {}}
    nodes: dict[tuple[str, ...], dict[str, Any]] = {(): root}
    for path in sorted(leaves, key=lambda p: (len(p), p)):
        schema, fname = leaves[path]
        parent = root
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in nodes:  # read from, but not itself a field
                nodes[prefix] = {"type": "object"}
                parent.setdefault("properties", {})[prefix[-1]] = nodes[prefix]
            parent = nodes[prefix]
            if parent is not root:
                if parent.get("type") not in (None, "object") and not (
                    isinstance(parent.get("type"), list) and "object" in parent["type"]
                ):
                    diag.warn(f"{cls}: {'.'.join(prefix)!r} is read as an object but typed {parent['type']!r}")
                parent["additionalProperties"] = True
        node = dict(schema)
        if fname != path[-1]:
            node["x-sdk-field"] = fname
        nodes[path] = node
        parent.setdefault("properties", {})[path[-1]] = node
    return root["properties"]


def event_documents(sdk: Sdk, diag: Diagnostics) -> dict[str, dict[str, Any]]:
    module = EventModule(sdk.events_path.read_text(encoding="utf-8"), diag)
    docs: dict[str, dict[str, Any]] = {}
    for event_type, cls in module.event_map().items():
        if cls not in module.classes:
            diag.warn(f"EVENT_CLASS_MAP[{event_type!r}] = {cls}: no such class; skipped")
            continue
        fields = module.fields(cls)
        leaves: dict[tuple[str, ...], tuple[dict[str, Any], str]] = {}
        for fname, reads in module.mapping(cls).items():
            if fname not in fields:
                diag.warn(f"{cls}.from_payload sets unknown field {fname!r}; skipped")
                continue
            schema = module.mapper.map(fields[fname], f"{cls}.{fname}")
            for path in reads.paths:
                if not path:
                    continue  # the whole params object (the `params` field)
                if path in leaves and leaves[path][0] != schema:
                    diag.warn(
                        f"{cls}: key {'.'.join(path)!r} read as {leaves[path][1]} and {fname} "
                        f"with different types; using {{}}"
                    )
                    leaves[path] = ({}, leaves[path][1])
                elif path not in leaves:
                    leaves[path] = (schema, fname)
        properties = build_tree(cls, leaves, diag)
        file_name = f"{event_type}.event.json"
        owner = module.from_payload(cls)
        reader = f"{owner[0]}.from_payload" if owner else "from_payload"
        doc: dict[str, Any] = {
            "$schema": DIALECT,
            "$id": f"relay/{file_name}",
            "title": f"{event_type} event",
            "x-method": event_type,
            "x-kind": "event",
            "x-source": (
                f"{DIST_NAME} {sdk.version} {EVENTS_FILE} {cls} "
                f"(EVENT_CLASS_MAP[{event_type!r}]; params keys read by {reader})"
            ),
            "type": "object",
            "properties": properties,
            "additionalProperties": True,
        }
        if is_permissive(properties):
            doc["x-permissive"] = True
        docs[file_name] = doc
    return docs


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def generate(sdk: Sdk, diag: Diagnostics) -> dict[str, bytes]:
    docs = method_documents(sdk, diag)
    for name, doc in event_documents(sdk, diag).items():
        if name in docs:
            raise GenerationError(f"{name} generated twice")
        docs[name] = doc
    return {name: render(docs[name]) for name in sorted(docs)}


def check(out: Path, display: str, expected: dict[str, bytes], sdk: Sdk) -> int:
    problems: list[str] = []
    on_disk = {p.name: p for p in out.glob("*.json") if p.is_file()} if out.is_dir() else {}
    if not out.is_dir():
        problems.append(f"{display}: directory missing")
    for name, data in expected.items():
        path = on_disk.get(name)
        if path is None:
            if out.is_dir():
                problems.append(f"{display}/{name}: missing")
        elif path.read_bytes() != data:
            problems.append(f"{display}/{name}: differs from the generated schema")
    for name in sorted(set(on_disk) - set(expected)):
        problems.append(f"{display}/{name}: stale (not produced by the generator)")
    if problems:
        for p in problems:
            print(p)
        if sdk.version != PINNED_VERSION:
            print(f"note: installed {DIST_NAME} is {sdk.version}; the schemas are pinned to {PINNED_VERSION}")
        print(f"hint: run python3 relay-protocol/generate.py with {DIST_NAME}=={PINNED_VERSION} installed")
        return EXIT_DRIFT
    print(f"{display}: {len(expected)} schemas up to date")
    return 0


def write(out: Path, display: str, expected: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    changed = 0
    for name, data in expected.items():
        path = out / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            changed += 1
    removed = 0
    for path in sorted(out.glob("*.json")):
        if path.name not in expected:
            path.unlink()
            removed += 1
    print(f"{display}: wrote {len(expected)} schemas ({changed} changed, {removed} stale removed)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Generate RELAY JSON Schemas from {DIST_NAME} (pinned {PINNED_VERSION})."
    )
    parser.add_argument("--check", action="store_true", help="compare with the files on disk; exit 1 on any difference")
    parser.add_argument("--out", metavar="DIR", help=f"output directory (default: {DEFAULT_OUT_DISPLAY})")
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else DEFAULT_OUT
    display = args.out if args.out else DEFAULT_OUT_DISPLAY

    try:
        sdk = locate_sdk()
    except SdkMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_SDK
    if sdk.version != PINNED_VERSION:
        print(
            f"warning: installed {DIST_NAME} is {sdk.version}, the schemas are pinned to "
            f"{PINNED_VERSION} (pip install {DIST_NAME}=={PINNED_VERSION})",
            file=sys.stderr,
        )

    diag = Diagnostics()
    try:
        expected = generate(sdk, diag)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DRIFT
    for msg in diag.notes:
        print(f"note: {msg}", file=sys.stderr)
    for msg in diag.warnings:
        print(f"warning: {msg}", file=sys.stderr)

    if args.check:
        return check(out, display, expected, sdk)
    write(out, display, expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
