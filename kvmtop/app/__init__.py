"""The Textual app of `kvmtop top` and `kvmtop replay`.

Layer: app. `main` is the app (its views, keys and replay navigation);
`feed_thread` is the thread that calls the feed and posts each frame to it.
"""
