"""Moved to eval/outcomes/generic.py; this name stays importable (tests and docs/eval.md use it)."""

from eval.outcomes.generic import FIELDS, load_csv, load_jsonl, messages_text, prompt_text, write_jsonl

__all__ = ["FIELDS", "load_csv", "load_jsonl", "messages_text", "prompt_text", "write_jsonl"]
