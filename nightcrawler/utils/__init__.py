"""Small shared helpers: atomic file writes, logging, distributed utilities, seeding."""
