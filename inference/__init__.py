"""kinevid inference."""
