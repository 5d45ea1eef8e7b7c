"""sim2pi agent package."""
