"""The HTTP front doors: the APIs' request and response shapes, errors, auth and the admin API."""
