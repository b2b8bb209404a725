"""kinevid opensim_bridge."""
