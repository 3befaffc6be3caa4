"""The loops and writers of the headless commands: batch output, the recorder, export.

Layer: headless (below the commands, beside the app; never imports textual).
"""
