"""kinevid models."""
