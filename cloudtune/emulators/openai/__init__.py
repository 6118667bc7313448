"""Loopback emulator of the OpenAI fine-tuning API (``cloudtune emulate openai``)."""

from cloudtune.emulators.openai.app import EmulatorSettings, OpenAIEmulator

__all__ = ["EmulatorSettings", "OpenAIEmulator", "start"]


def start(settings: EmulatorSettings | None = None, *, port: int = 0, speed: float = 1.0):  # type: ignore[no-untyped-def]
    """Start an emulator on a loopback port in a background thread; returns the running server."""
    from cloudtune.emulators._http import EmulatorClock, EmulatorServer

    app = OpenAIEmulator(settings, clock=EmulatorClock(speed=speed))
    return EmulatorServer(app, port=port).start()
