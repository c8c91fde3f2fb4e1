"""The RadioStation process shell: peer directory, channel configuration, REST on port + 1900."""
