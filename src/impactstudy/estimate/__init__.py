"""Estimate: design-based estimates of every indicator (SE, CI, n, effective n, deff, domains),
equal to R survey.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
