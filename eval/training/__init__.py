"""Training jobs: the router classifier, batch embedding, add-category, the quality head, first-run
seeding."""
