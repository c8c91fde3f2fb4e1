"""The consensus state machine: events in, actions out (pure and deterministic)."""
