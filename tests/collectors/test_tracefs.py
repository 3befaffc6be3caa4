"""tracefs format parser on format files captured from a real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmtop.collectors.tracefs import (
    Condition,
    Field,
    eval_int,
    filter_literal,
    parse_format,
    parse_symbolic,
)

CAPTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tracefs" / "6.18.44-fc-v782"


def load(event: str) -> str:
    return (CAPTURE / "events" / "kvm" / event / "format").read_text()


def test_kvm_exit_fields() -> None:
    fmt = parse_format(load("kvm_exit"))
    assert (fmt.name, fmt.id) == ("kvm_exit", 103)
    assert fmt.id == int((CAPTURE / "events/kvm/kvm_exit/id").read_text())
    assert fmt.fields["exit_reason"] == Field("exit_reason", "unsigned int", 8, 4, False)
    assert fmt.fields["isa"] == Field("isa", "u32", 24, 4, False)
    assert fmt.fields["requests"].offset == 64  # field added in 2024 (6.x)
    assert fmt.fields["common_pid"].signed


def test_kvm_exit_vmx_table() -> None:
    vmx, _svm = parse_format(load("kvm_exit")).tables_for("exit_reason")
    assert vmx.condition == Condition("isa", "==", 1)  # KVM_ISA_VMX
    assert vmx.mask == 0xFFFF  # basic exit reason; upper bits are flags
    assert vmx.values[12] == "HLT"
    assert vmx.values[30] == "IO_INSTRUCTION"
    assert vmx.values[48] == "EPT_VIOLATION"
    # Reasons newer than kvm_stat's hard-coded table (Linux 6.18).
    assert (vmx.values[77], vmx.values[84], vmx.values[85]) == (
        "TDCALL",
        "MSR_READ_IMM",
        "MSR_WRITE_IMM",
    )
    assert len(vmx.values) == 65 and not vmx.wide


def test_kvm_exit_svm_table() -> None:
    _vmx, svm = parse_format(load("kvm_exit")).tables_for("exit_reason")
    assert svm.condition == Condition("isa", "!=", 1)
    assert svm.condition.holds(2) and not svm.condition.holds(1)  # KVM_ISA_SVM = 2
    assert svm.mask is None
    assert svm.values[0x078] == "hlt"
    assert svm.values[0x07B] == "io"
    assert svm.values[0x400] == "npf"
    assert svm.values[0x040 + 14] == "PF excp"  # "0x040 + 14" evaluated
    assert svm.values[0x0A6] == "idle-halt"
    assert svm.values[0x8000FFFD] == "vmgexit_hypervisor_feature"
    assert svm.values[-1] == "invalid_guest_state"
    assert len(svm.values) == 110


def test_userspace_exit_reasons_join_string_literals() -> None:
    fmt = parse_format(load("kvm_userspace_exit"))
    (table,) = fmt.tables_for("reason")
    assert table.values[2] == "KVM_EXIT_IO"  # printed as "KVM_EXIT_" "IO"
    assert table.values[6] == "KVM_EXIT_MMIO"
    assert table.values[30] == "KVM_EXIT_X86_WRMSR"
    assert table.condition is None
    assert fmt.fields["errno"].signed


def test_expression_values() -> None:
    (flags,) = parse_format(load("kvm_emulate_insn")).tables_for("flags")
    assert flags.values == {0: "real", 3: "vm16", 1: "prot16", 5: "prot32", 9: "prot64"}


def test_events_without_tables() -> None:
    pio = parse_format(load("kvm_pio"))
    assert pio.symbolic == ()
    assert set(pio.fields) >= {"rw", "port", "size", "count", "val"}
    (mmio,) = parse_format(load("kvm_mmio")).tables_for("type")
    assert mmio.values == {0: "unsatisfied-read", 1: "read", 2: "write"}


@pytest.mark.parametrize("event", sorted(p.name for p in (CAPTURE / "events/kvm").iterdir()))
def test_every_capture_parses(event: str) -> None:
    fmt = parse_format(load(event))
    assert fmt.name == event
    assert fmt.id == int((CAPTURE / "events/kvm" / event / "id").read_text())


def test_print_symbolic64() -> None:
    # Synthetic one-liner in the shape of the late-2025 SVM change (no captured
    # format file of such a kernel was found; see tests/fixtures/tracefs/README.md).
    (table,) = parse_symbolic(
        '"reason %s", (REC->isa == 1) ? "" : '
        '__print_symbolic64(REC->exit_reason, { 0x400, "npf" }, { 0xffffffffffffffff, "x" })'
    )
    assert table.wide and table.values == {0x400: "npf", 0xFFFFFFFFFFFFFFFF: "x"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        ("0x07b", 0x7B),
        ("0x040 + 13", 0x4D),
        ("(1 << 0) | (1 << 3)", 9),
        ("-1", -1),
        ("~0 & 0xff", 0xFF),
        ("1UL << 4", 16),
        ("010", 8),
    ],
)
def test_eval_int(text: str, value: int) -> None:
    assert eval_int(text) == value


@pytest.mark.parametrize("text", ["", "FOO", "1 +", "(1", "1)", "sizeof(int)"])
def test_eval_int_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        eval_int(text)


def test_filter_literal_for_unsigned_fields() -> None:
    u32 = Field("exit_reason", "unsigned int", 8, 4, False)
    assert filter_literal(u32, -1) == 0xFFFFFFFF
    assert filter_literal(u32, 12) == 12
    assert filter_literal(Field("errno", "int", 12, 4, True), -4) == -4


@pytest.mark.parametrize(
    "text",
    [
        "ID: 3\nformat:\n",  # no name
        "name: x\nformat:\n",  # no ID
        "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:x;\n",  # malformed field
        'name: x\nID: 1\nprint fmt: "%s", __print_symbolic(REC->a, { 1, "a" }',  # unbalanced
    ],
)
def test_malformed_format(text: str) -> None:
    with pytest.raises(ValueError):
        parse_format(text)
