"""The one request pipeline: routing, the expert gateway, cache, limits, observation and decisions."""
