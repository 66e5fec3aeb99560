"""elis: an LLM batch inference service that schedules jobs by their predicted remaining length."""

__version__ = "0.1.0"
