"""Recording store, recorder, replay feed and the record/replay/slice commands."""
