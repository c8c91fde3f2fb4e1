"""Logging set-up of the RadioStation process (coloured levels on a terminal when asked)."""

from __future__ import annotations

import logging
import sys

from loopchain.configure import Config

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_COLOURS = {
    logging.DEBUG: "\033[36m",
    logging.INFO: "\033[32m",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[1;31m",
}
_RESET = "\033[0m"


class ColourFormatter(logging.Formatter):
    """A formatter that colours the whole line by its level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        colour = _COLOURS.get(record.levelno)
        return f"{colour}{text}{_RESET}" if colour else text


def setup_logging(config: Config, colour: bool) -> None:
    """Log to stderr (and LOG_FILE_PATH when set) at LOOPCHAIN_LOG_LEVEL."""
    level = logging.getLevelName(str(config.LOOPCHAIN_LOG_LEVEL).upper())
    if not isinstance(level, int):
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    use_colour = colour and sys.stderr.isatty()
    handler.setFormatter(ColourFormatter(FORMAT) if use_colour else logging.Formatter(FORMAT))
    handlers: list[logging.Handler] = [handler]
    if config.LOG_FILE_PATH:
        file_handler = logging.FileHandler(config.LOG_FILE_PATH, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FORMAT))
        handlers.append(file_handler)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    for noisy in ("asyncio", "grpc", "aiohttp.server"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
