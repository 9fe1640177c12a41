"""Benchmarks: one script per kernel or backend, each printing a markdown table last."""
