"""Inter-process messages: the envelope codec and the ZeroMQ bus."""
