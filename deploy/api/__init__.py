"""The HTTP front doors: each API's request and response models, translation and stream encoder, errors, auth and the admin API."""
