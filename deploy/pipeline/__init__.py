"""The one request pipeline: authenticate, read, decide, call, observe."""
