"""Report: the bilingual report (HTML, PDF, XLSX) in which every number carries its interval and
provenance.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
