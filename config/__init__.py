"""Paths, profiles and settings. Imports nothing of ours."""
