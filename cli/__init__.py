"""The openclaw-sup command line."""
