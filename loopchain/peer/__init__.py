"""The peer process shell: argv, configuration, wiring, asyncio run."""
