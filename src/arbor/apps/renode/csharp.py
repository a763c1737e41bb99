"""Reading a generated model back with tree-sitter-c-sharp.

The validators judge the C# text, not the emitter's intentions: this module turns the syntax
tree into plain facts (the ``Registers`` enum, each ``Define`` chain and its ``With*`` calls, the
``Size`` and ``GPIO`` properties), so an edit by an agent is checked exactly like the skeleton.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tree_sitter_c_sharp
from tree_sitter import Language, Node, Parser

__all__ = ["DefineChain", "FieldCall", "ModelFacts", "Syntax", "parse_csharp", "read_model"]

_LANGUAGE = Language(tree_sitter_c_sharp.language())


@dataclass(frozen=True)
class Syntax:
    """Where tree-sitter found ERROR or MISSING nodes (1-based line, column)."""

    errors: tuple[tuple[int, int, str], ...]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class FieldCall:
    """One ``With*`` call: its method, integer arguments, FieldMode flags and ``name:``."""

    method: str
    ints: tuple[int, ...]
    modes: frozenset[str]
    name: str | None


@dataclass
class DefineChain:
    """``Registers.<member>.Define(this, reset, name: ...)`` and the calls chained on it."""

    member: str
    reset_value: int | None
    name: str | None
    calls: list[FieldCall] = field(default_factory=list)


@dataclass
class ModelFacts:
    enum_members: dict[str, int] = field(default_factory=dict)
    chains: list[DefineChain] = field(default_factory=list)
    size: int | None = None
    gpio_properties: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def parse_csharp(source: str) -> tuple[Node, Syntax]:
    tree = Parser(_LANGUAGE).parse(source.encode())
    errors: list[tuple[int, int, str]] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, col = node.start_point
            kind = "missing " + node.type if node.is_missing else "unexpected " + _text(node)[:40]
            errors.append((row + 1, col + 1, kind))
            continue
        if node.has_error:
            stack.extend(node.children)
    return tree.root_node, Syntax(errors=tuple(sorted(errors)))


def read_model(source: str) -> ModelFacts:
    """Facts about every model class in ``source`` (syntax errors leave holes, not crashes)."""
    root, _ = parse_csharp(source)
    facts = ModelFacts()
    for node in _walk(root):
        if node.type == "class_declaration":
            name = node.child_by_field_name("name")
            if name is not None:
                facts.classes.append(_text(name))
        elif node.type == "enum_declaration" and _name(node) == "Registers":
            _read_enum(node, facts)
        elif node.type == "property_declaration":
            _read_property(node, facts)
        elif node.type == "invocation_expression":
            chain = _define_chain(node)
            if chain is not None:
                facts.chains.append(chain)
    return facts


def _walk(root: Node) -> list[Node]:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def _text(node: Node) -> str:
    return (node.text or b"").decode(errors="replace")


def _name(node: Node) -> str | None:
    name = node.child_by_field_name("name")
    return _text(name) if name is not None else None


def _int(node: Node | None) -> int | None:
    """The value of an integer literal (``0x1F``, ``12``, ``0x10u``), else None."""
    if node is None or node.type != "integer_literal":
        return None
    text = _text(node).lower().rstrip("ul").replace("_", "")
    try:
        return int(text, 16) if text.startswith("0x") else int(text, 10)
    except ValueError:
        return None


def _read_enum(node: Node, facts: ModelFacts) -> None:
    body = node.child_by_field_name("body")
    for member in body.named_children if body is not None else []:
        if member.type != "enum_member_declaration":
            continue
        name, value = _name(member), _int(member.child_by_field_name("value"))
        if name is not None and value is not None:
            facts.enum_members[name] = value


def _read_property(node: Node, facts: ModelFacts) -> None:
    name, kind = _name(node), node.child_by_field_name("type")
    if name is None or kind is None:
        return
    if name == "Size":
        value = node.child_by_field_name("value")
        if value is not None and value.type == "arrow_expression_clause":
            value = value.named_children[-1] if value.named_children else None
        facts.size = _int(value)
    elif _text(kind).split(".")[-1] == "GPIO":
        facts.gpio_properties.append(name)


def _arguments(call: Node) -> tuple[list[Node], dict[str, Node]]:
    """Positional argument expressions and named ones (``name: "X"``)."""
    positional: list[Node] = []
    named: dict[str, Node] = {}
    args = call.child_by_field_name("arguments")
    for arg in args.named_children if args is not None else []:
        if arg.type != "argument" or not arg.children:
            continue
        label = arg.child_by_field_name("name")
        value = arg.children[-1]  # ``this`` is an anonymous node: not in named_children
        if label is not None and value.id != label.id:
            named[_text(label)] = value
        else:
            positional.append(value)
    return positional, named


def _string(node: Node | None) -> str | None:
    if node is None or node.type != "string_literal":
        return None
    return "".join(
        _text(c) if c.type == "string_literal_content" else _unescape(_text(c))
        for c in node.named_children
    )


def _unescape(escape: str) -> str:
    return {"\\\\": "\\", '\\"': '"', "\\n": "\n", "\\t": "\t"}.get(escape, escape)


def _modes(node: Node | None) -> frozenset[str]:
    """``FieldMode.Read | FieldMode.Write`` → {"Read", "Write"}."""
    if node is None:
        return frozenset()
    if node.type == "member_access_expression":
        target, name = node.child_by_field_name("expression"), node.child_by_field_name("name")
        if target is not None and name is not None and _text(target).endswith("FieldMode"):
            return frozenset({_text(name)})
        return frozenset()
    operator = node.child_by_field_name("operator")
    if node.type == "binary_expression" and operator is not None and _text(operator) == "|":
        return _modes(node.child_by_field_name("left")) | _modes(node.child_by_field_name("right"))
    if node.type == "parenthesized_expression" and node.named_children:
        return _modes(node.named_children[0])
    return frozenset()


def _method(call: Node) -> tuple[str, Node | None]:
    """(method name, receiver expression) of ``receiver.Method<...>(...)``."""
    function = call.child_by_field_name("function")
    if function is None or function.type != "member_access_expression":
        return "", None
    name = function.child_by_field_name("name")
    if name is not None and name.type == "generic_name":
        name = name.named_children[0] if name.named_children else None
    return (_text(name) if name is not None else ""), function.child_by_field_name("expression")


def _define_chain(call: Node) -> DefineChain | None:
    method, receiver = _method(call)
    if method != "Define" or receiver is None or receiver.type != "member_access_expression":
        return None
    enum, member = receiver.child_by_field_name("expression"), receiver.child_by_field_name("name")
    if enum is None or member is None or _text(enum) != "Registers":
        return None
    positional, named = _arguments(call)
    reset = _int(positional[1]) if len(positional) > 1 else _int(named.get("resetValue"))
    chain = DefineChain(member=_text(member), reset_value=reset, name=_string(named.get("name")))
    node = call
    # Walk outwards: Define(...).WithFlag(...).WithValueField(...)...
    while (
        node.parent is not None
        and node.parent.type == "member_access_expression"
        and node.parent.parent is not None
        and node.parent.parent.type == "invocation_expression"
    ):
        outer = node.parent.parent
        name, _ = _method(outer)
        args, named_args = _arguments(outer)
        ints = tuple(v for v in (_int(a) for a in args) if v is not None)
        mode_node = named_args.get("mode") or next((a for a in args if _modes(a)), None)
        label = _string(named_args.get("name"))
        chain.calls.append(FieldCall(method=name, ints=ints, modes=_modes(mode_node), name=label))
        node = outer
    return chain
