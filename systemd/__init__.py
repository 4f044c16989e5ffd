"""systemd: filled in by later issues."""
