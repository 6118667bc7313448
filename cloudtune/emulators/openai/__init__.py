"""Loopback emulator of the OpenAI fine-tuning API (``cloudtune emulate openai``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudtune.emulators.openai.app import EmulatorSettings, OpenAIEmulator

if TYPE_CHECKING:
    from cloudtune.emulators._http import EmulatorServer

__all__ = ["EmulatorSettings", "OpenAIEmulator", "serve", "start"]


def serve(app: OpenAIEmulator, *, host: str | None = None, port: int = 0, verbose: bool = False) -> "EmulatorServer":
    """An (unstarted) server for ``app`` on loopback."""
    from cloudtune.emulators._http import LOOPBACK, EmulatorServer

    return EmulatorServer(app, host=host or LOOPBACK, port=port, verbose=verbose)


def start(settings: EmulatorSettings | None = None, *, port: int = 0, speed: float = 1.0) -> "EmulatorServer":
    """Start an emulator on a loopback port in a background thread; returns the running server."""
    from cloudtune.emulators._http import EmulatorClock

    return serve(OpenAIEmulator(settings, clock=EmulatorClock(speed=speed)), port=port).start()
