"""gRPC adapter: thin servicers over the core, the server process and its lifecycle."""
