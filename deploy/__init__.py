"""sim2pi deploy package."""
