"""The help screen: every key and every guest-table column with what it means.

Layer: views. Reads the keys it is given and the column catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from kvmtop.model.fields import GUEST_COLUMNS


class HelpScreen(ModalScreen[None]):
    """Every key and every guest-table column with what it means."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close"),
    ]

    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        """Create the screen.

        Args:
            keys: (key, what it does) pairs.
        """
        super().__init__()
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        """Keys, then columns."""
        width = max(len(k) for k, _ in self.keys)
        lines = [Content.assemble(("Keys", "bold $primary"))]
        lines += [Content.assemble((f"  {k:<{width}}  ", "bold"), d) for k, d in self.keys]
        lines += [Content(""), Content.assemble(("Guest table columns", "bold $primary"))]
        lines += [
            Content.assemble((f"  {c.header:<{width}}  ", "bold"), c.help) for c in GUEST_COLUMNS
        ]
        lines += [
            Content(""),
            Content.assemble(
                (
                    "A blank cell (–) means unknown, never zero; the sources view (s) says why.",
                    "$kvm-dim",
                )
            ),
        ]
        with VerticalScroll(id="help"):
            yield Static(Content("\n").join(lines))
