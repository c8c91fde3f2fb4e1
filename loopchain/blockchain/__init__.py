"""Chain logic: the block store, transaction pool and block validation (pure, no I/O frameworks)."""
