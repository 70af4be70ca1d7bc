"""Classification eval of a router artifact: held-out metrics, leave-one-source-out, cross-family."""
