"""The supervisor: the parent process that owns the port, the bus and the process table."""
