"""Simulate: a synthetic ecosystem for a Study and a seed: population, sample, responses (good and
bad) and the ground truth.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
