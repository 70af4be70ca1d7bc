"""Offline routing evaluation: policy replay, cost-quality metrics, reports, live eval, skill profiles."""
