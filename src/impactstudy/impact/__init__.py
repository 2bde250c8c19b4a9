"""Impact: the economic impact model (direct and input-output jobs, consumption, shares, growth)
with Monte Carlo uncertainty.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
