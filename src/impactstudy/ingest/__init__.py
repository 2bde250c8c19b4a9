"""Ingest: foreign exports (ODK Central, KoboToolbox, 问卷星, Qualtrics) read into the Responses
interchange format.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
