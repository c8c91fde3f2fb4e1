"""Key-value storage: the KeyValueStore interface with LevelDB and in-memory backends."""
