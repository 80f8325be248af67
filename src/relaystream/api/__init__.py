"""The control API: Volcengine's wire protocol (V4 signatures, the JSON envelope, error
codes) in front of the task service. PascalCase names live here and nowhere else."""
