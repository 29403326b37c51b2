"""Nightcrawler: action recognition in extremely dark videos."""

__version__ = "0.1.0"
