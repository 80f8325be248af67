"""Relay tasks: the model and its state machine, the service behind the API actions,
and the supervisor that runs each task's media worker and room publisher."""
