"""The command line: one module per command, each thin (its arguments, then the
pipeline it builds and the core it calls).

`top` (no command: the live TUI or --batch), `record`, `replay`, `slice`, `reindex`,
`report`, `export`, `doctor`, `serve`, `fleet` and `completion`. Shared: `main` (the
entry point and exit statuses), `parser` (the parser and the options every command
takes), `common` (errors, outputs, recordings and their time range), `manual` (the
--help sections) and `shells` (completion scripts).
"""
