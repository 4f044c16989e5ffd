"""Workers: the runtime every worker process runs, and one module per worker kind."""
