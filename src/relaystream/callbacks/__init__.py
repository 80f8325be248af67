"""RelayStreamStateChanged callbacks (SPEC §5): what is sent, how it is signed, and how
it gets there.

- ``events``: the event a task's visible state change makes, and when it makes one.
- ``signing``: the signature a receiver checks with its callback secret.
- ``outbox``: the record written in the task's unit of work, and the wake-up call the
  delivery worker gets after the commit.
- ``delivery``: the worker that sends due records, in order per task, with retries,
  and never lets one receiver hold up another app's.
- ``sender``: one signed POST through the checked HTTP client (address policy).
- ``operators``: the pending and failed events an operator sees, redelivers, discards.
"""
