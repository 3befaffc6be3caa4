"""Recordings of raw samples: one SQLite file per recording.

Layer: store. Imports the model only; never textual.

`StoreWriter` appends samples (crash-safe, compressed, with retention), `StoreReader`
reads them back (seek by time, follow a file being written, skip damaged rows), and
`slice_recording` copies a time range into a new file. Import the submodules directly
(`kvmtop.store.writer`, `kvmtop.store.reader`): this package stays import-free so
`import kvmtop.store.codec` does not load SQLite or zstd.
"""
