"""Datasets, router training, routing metrics, reports and batch jobs."""
