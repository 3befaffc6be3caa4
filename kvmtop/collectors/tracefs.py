"""Pure parser of tracefs event `format` files: fields and symbolic value tables.

Layer: collectors, without I/O: every function takes text and returns values.

A format file (`/sys/kernel/tracing/events/<system>/<event>/format`, written by
kernel/trace/trace_events.c) lists the event's fields with their offsets and sizes,
then the `print fmt:` line: the TP_printk format with `__entry->` rewritten to
`REC->` and every macro expanded. kvm:kvm_exit prints its reason through
`__print_symbolic(REC->exit_reason & 0xffff, { 0, "EXCEPTION_NMI" }, ...)` for VMX
and `__print_symbolic(REC->exit_reason, { 0x000, "read_cr0" }, ...)` (or
`__print_symbolic64` once SVM exit codes became u64, late 2025) for SVM, chosen by
`(REC->isa == 1) ? ... : ...` (arch/x86/kvm/trace.h kvm_print_exit_reason). These
tables are the kernel's own and grow with it, so kvmtop reads them at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"\s*signed:(?P<signed>[01]);"
)
_SYMBOLIC = re.compile(r"__print_symbolic(64)?\(")
_CONDITION = re.compile(r"\(\s*REC->(\w+)\s*==\s*([^()]+?)\s*\)\s*\?\s*$")


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an event record.

    Attributes:
        name: field name as usable in a filter ("exit_reason").
        ctype: C type as declared ("unsigned int", "u64", "__u8 insn[15]" → "__u8").
        offset: byte offset in the record.
        size: size in bytes.
        signed: whether the value is signed.
    """

    name: str
    ctype: str
    offset: int
    size: int
    signed: bool


@dataclass(frozen=True, slots=True)
class Condition:
    """A guard `REC-><field> <op> <value>` that selects one symbolic table.

    `op` is "==" for the true branch of `(REC->isa == 1) ? A : B` and "!=" for B.
    """

    field: str
    op: str
    value: int

    def holds(self, value: int) -> bool:
        """Whether a record whose `field` equals `value` takes this branch."""
        return (value == self.value) if self.op == "==" else (value != self.value)


@dataclass(frozen=True, slots=True)
class SymbolicTable:
    """One `__print_symbolic(expr, {value, "name"}, ...)` of a print fmt.

    Attributes:
        field: the record field the value comes from ("exit_reason").
        mask: the `& MASK` applied to the field before lookup, if any (VMX keeps
            the basic exit reason in the low 16 bits; the upper bits are flags).
        values: value → name, in the order the kernel lists them.
        condition: the ternary guard selecting this table, if any.
        wide: True for `__print_symbolic64` (64-bit values).
    """

    field: str
    mask: int | None
    values: dict[int, str]
    condition: Condition | None = None
    wide: bool = False


@dataclass(frozen=True, slots=True)
class EventFormat:
    """A parsed `format` file.

    Attributes:
        name: event name ("kvm_exit").
        id: event id, the perf_event_attr.config of a PERF_TYPE_TRACEPOINT event.
        fields: record fields by name, common_* fields included.
        print_fmt: the raw `print fmt:` text.
        symbolic: every symbolic table found in `print_fmt`, in order.
    """

    name: str
    id: int
    fields: dict[str, Field]
    print_fmt: str
    symbolic: tuple[SymbolicTable, ...]

    def tables_for(self, field: str) -> tuple[SymbolicTable, ...]:
        """The symbolic tables that name values of `field`."""
        return tuple(t for t in self.symbolic if t.field == field)


# --------------------------------------------------------------------------- expressions

_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|(<<|>>|[-+|&~()]))")


def eval_int(text: str) -> int:
    """Evaluate an integer constant expression as printed in format files.

    Supports decimal and hex literals (C suffixes ignored), unary - and ~, and the
    binary operators << >> & | + - with C precedence and parentheses, which covers
    what kernel symbol tables use ("0x040 + 13", "(1 << 0) | (1 << 2)", "-1").

    Raises:
        ValueError: anything else (identifiers, casts, unbalanced parentheses).
    """
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"not an integer expression: {text!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    # Binary operators from loosest to tightest binding (C: | then & then shifts then +-).
    levels: tuple[tuple[str, ...], ...] = (("|",), ("&",), ("<<", ">>"), ("+", "-"))
    index = 0

    def peek() -> str | None:
        return tokens[index] if index < len(tokens) else None

    def take() -> str:
        nonlocal index
        if index >= len(tokens):
            raise ValueError(f"truncated expression: {text!r}")
        index += 1
        return tokens[index - 1]

    def unary() -> int:
        tok = take()
        if tok == "-":
            return -unary()
        if tok == "~":
            return ~unary()
        if tok == "(":
            value = binary(0)
            if take() != ")":
                raise ValueError(f"unbalanced parentheses: {text!r}")
            return value
        if tok[0].isdigit():
            return int(tok, 0) if not re.fullmatch(r"0\d+", tok) else int(tok, 8)
        raise ValueError(f"unexpected {tok!r} in {text!r}")

    def binary(level: int) -> int:
        if level == len(levels):
            return unary()
        value = binary(level + 1)
        while peek() in levels[level]:
            op = take()
            rhs = binary(level + 1)
            value = {
                "|": value | rhs,
                "&": value & rhs,
                "<<": value << rhs,
                ">>": value >> rhs,
                "+": value + rhs,
                "-": value - rhs,
            }[op]
        return value

    result = binary(0)
    if index != len(tokens):
        raise ValueError(f"trailing tokens in {text!r}")
    return result


# --------------------------------------------------------------------------- print fmt


def _string_end(text: str, start: int) -> int:
    """Index of the quote closing the C string literal that opens at `start`."""
    i = start + 1
    while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at `start`, skipping string literals.

    Raises:
        ValueError: the parenthesis is never closed.
    """
    depth = 0
    i = start
    try:
        while True:
            ch = text[i]
            if ch == '"':
                i = _string_end(text, i)
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    return i
            i += 1
    except IndexError:
        raise ValueError(f"unbalanced '(' at offset {start}") from None


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets and string literals."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i = _string_end(text, i)
        elif ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _string_literal(text: str) -> str:
    """Join adjacent C string literals ("KVM_EXIT_" "IO" → "KVM_EXIT_IO")."""
    pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    if not pieces or re.sub(r'"((?:[^"\\]|\\.)*)"', "", text).strip():
        raise ValueError(f"not a string literal: {text!r}")
    return "".join(pieces)


def _value_expr(expr: str) -> tuple[str, int | None] | None:
    """(field, mask) of `REC->field` or `REC->field & MASK`; None for other shapes."""
    m = re.fullmatch(r"\(?\s*REC->(\w+)\s*(?:&\s*([^()]+?))?\s*\)?", expr.strip())
    if m is None:
        return None
    mask = eval_int(m.group(2)) if m.group(2) else None
    return m.group(1), mask


def parse_symbolic(print_fmt: str) -> tuple[SymbolicTable, ...]:
    """Every `__print_symbolic[64](REC->field [& mask], {v, "name"}...)` in `print_fmt`.

    A table right after `(REC->f == N) ?` gets the condition f == N; a table right
    after the `:` that closes such a branch gets f != N. Tables whose value is not a
    plain (masked) field, and entries whose value is not a constant, are skipped.

    Raises:
        ValueError: unbalanced brackets or string literals.
    """
    tables: list[SymbolicTable] = []
    previous_end = -1
    previous_cond: Condition | None = None
    for m in _SYMBOLIC.finditer(print_fmt):
        if m.start() < previous_end:
            continue  # nested inside the previous table (not seen in practice)
        open_at = m.end() - 1
        close_at = _closing(print_fmt, open_at)
        args = _split_top(print_fmt[open_at + 1 : close_at])
        parsed = _value_expr(args[0])
        condition: Condition | None = None
        before = print_fmt[: m.start()]
        guard = _CONDITION.search(before)
        if guard is not None:
            try:
                condition = Condition(guard.group(1), "==", eval_int(guard.group(2)))
            except ValueError:
                condition = None
        elif (
            previous_cond is not None
            and previous_cond.op == "=="
            and print_fmt[previous_end + 1 : m.start()].strip() == ":"
        ):
            condition = Condition(previous_cond.field, "!=", previous_cond.value)
        previous_end, previous_cond = close_at, condition
        if parsed is None:
            continue
        values: dict[int, str] = {}
        for entry in args[1:]:
            if not (entry.startswith("{") and entry.endswith("}")):
                continue
            pair = _split_top(entry[1:-1])
            if len(pair) != 2:
                continue
            try:
                values[eval_int(pair[0])] = _string_literal(pair[1])
            except ValueError:
                continue
        tables.append(
            SymbolicTable(
                field=parsed[0],
                mask=parsed[1],
                values=values,
                condition=condition,
                wide=m.group(1) == "64",
            )
        )
    return tuple(tables)


def parse_format(text: str) -> EventFormat:
    """Parse a tracefs `format` file.

    Raises:
        ValueError: no `name:`/`ID:` line, or a malformed field or print fmt.
    """
    name: str | None = None
    event_id: int | None = None
    fields: dict[str, Field] = {}
    print_fmt = ""
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("ID:"):
            event_id = int(line.partition(":")[2])
        elif line.startswith("print fmt:"):
            print_fmt = line.partition(":")[2].strip()
        elif line.strip().startswith("field:"):
            m = _FIELD.match(line)
            if m is None:
                raise ValueError(f"format: malformed field line {line.strip()!r}")
            decl = re.sub(r"\[[^\]]*\]$", "", m.group("decl").strip())
            ctype, _, fname = decl.rpartition(" ")
            fields[fname] = Field(
                name=fname,
                ctype=ctype.strip(),
                offset=int(m.group("offset")),
                size=int(m.group("size")),
                signed=m.group("signed") == "1",
            )
    if name is None or event_id is None:
        raise ValueError("format: no 'name:' or 'ID:' line")
    return EventFormat(
        name=name,
        id=event_id,
        fields=fields,
        print_fmt=print_fmt,
        symbolic=parse_symbolic(print_fmt),
    )


def filter_literal(field: Field, value: int) -> int:
    """`value` as the filter parser reads it for `field`.

    kernel/trace/trace_events_filter.c parses a literal for an unsigned field with
    kstrtoull, so a table entry like SVM's `{ -1, "invalid_guest_state" }` must be
    written as its two's complement at the field's width.
    """
    if field.signed or value >= 0:
        return value
    return value & ((1 << (8 * field.size)) - 1)
