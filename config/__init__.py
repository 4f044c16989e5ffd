"""Paths, profiles, settings, the schema, owned writes and the reload plan. Imports nothing of ours outside config/."""
