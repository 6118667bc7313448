"""Loopback emulators of the cloud APIs cloudtune talks to (``cloudtune emulate ...``).

They are product features (free dry runs of CI pipelines) and the test
doubles of the real SDKs: the SDKs talk to them over real HTTP.
"""
