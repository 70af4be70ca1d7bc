"""OpenAI-compatible expert clients, the fault-tolerant expert pool, aggregation, and local CPU experts."""
