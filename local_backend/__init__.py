"""The local fine-tuning backend: LoRA/QLoRA training, a detached job worker, an
OpenAI-compatible chat server, and adapter export.

Nothing here imports torch at package import time; the heavy modules are
imported by the worker and server processes and by the functions that need them.
"""
