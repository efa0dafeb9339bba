"""Small shared helpers: one-line user errors, atomic file writes, device resolution, token-file names."""
