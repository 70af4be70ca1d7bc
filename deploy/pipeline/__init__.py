"""The one request pipeline: authenticate, read, decide (affinity, routing, cache), call, observe."""
