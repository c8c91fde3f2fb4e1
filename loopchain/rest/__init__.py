"""The REST proxy process shell: the peer REST API v1 over gRPC to the peer."""
