"""`kvmtop report`: an incident summary of a recording, as text, Markdown, JSON or HTML.

Layer: beside the views, below the commands (`kvmtop.commands.report`); never
imports textual.

Its modules, by stage (each imports only those above it):

- `stats`: streaming statistics (`Stats`, the p95's `LogHistogram`, `Trend`, `Series`);
- `metrics`: the catalogue of guest and host figures;
- `reading`: a range's samples through the shared pipeline (`frames`), `Progress`;
- `incidents`, `accumulate`: snapshots folded into a `Report` (`build_report`);
- `index`: the recording's index of per-minute rollups (`kvmtop record` writes it,
  `indexed_report` reads it);
- `content`: what the report says, as sections of text (`sections`);
- `text` (text and Markdown), `as_json`, and `html` with `plots` and `svg`: the formats;
- `render`: a report in the format asked for (the renderers loaded only then).

Up to `index`, nothing renders: `kvmtop record` and `kvmtop export` load no
rendering code (import-linter contracts in pyproject.toml).
"""
