"""Media: open a source URL, select its streams, remux or transcode, pace in real time.

The pipeline runs in a worker process of its own (``worker.py``) so that a crash, a hang
or a malformed source in one task never touches the server or another task. What crosses
the process boundary is encoded packets (H.264 Annex B, Opus) and a few events
(``wire.py``); ``process.py`` is the server-side handle on one worker.
"""
