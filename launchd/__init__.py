"""launchd: filled in by later issues."""
