"""Quality: Responses screened into a ValidSample, with a flag column per rule and an audit of
every exclusion.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
