"""gRPC adapters: the peer service, clients to peers and the RadioStation, protobuf codecs."""
