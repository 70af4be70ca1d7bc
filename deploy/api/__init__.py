"""The HTTP front doors: each API's models, translation and stream encoder; errors, auth, the admin API."""
