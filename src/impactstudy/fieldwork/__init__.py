"""Fieldwork: the web (CAWI) and phone (CATI) server that collects submissions for a Study:
invitations, quotas, call management, partial saves and paradata.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
