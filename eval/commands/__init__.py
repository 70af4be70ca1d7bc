"""The `coe router …` and `coe eval …` commands (Typer)."""
