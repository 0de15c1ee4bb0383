"""Sampling & Inference course kit: the course GPT and the tools around it."""

__version__ = "0.1.0"
