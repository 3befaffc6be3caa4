"""Feeds: where snapshots come from (the live sampler, or a recording).

Layer: feed. Imports sampler, store and model; never textual.

Everything after the raw `Sample` is shared: `pipeline.Pipeline.push()` derives rates
through the window, runs the detectors, groups their findings into incidents and
builds the snapshot, whichever feed supplied the sample. So replay shows exactly what
live showed for the same samples.

- `protocols`: what a feed, a navigable feed and a sample sink offer;
- `pipeline`: sample → rates → findings → incidents → snapshot; `checkpoint` saves
  and restores its detectors' state;
- `live`: the sampler now; `replay`: a recording, navigable (`protocols.Navigable`):
  seek, step, playback speed, and the spans during which findings were active and
  where incidents were first shown (`spans`), found by scanning the recording
  through a second pipeline (`replay.ReplayFeed.scan`);
- `times`: a point in a recording as the user types it.
"""
