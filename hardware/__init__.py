"""sim2pi hardware package."""
