"""Filters, weighers and claims accounting. Pure: takes hypervisors and claims, returns a choice."""
