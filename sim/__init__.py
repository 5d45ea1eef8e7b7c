"""sim2pi sim package."""
