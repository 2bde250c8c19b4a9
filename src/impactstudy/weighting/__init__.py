"""Weighting: design weights, nonresponse adjustment, post-stratification, raking and calibration,
trimming and replicate weights, giving a WeightedSample.

This stage is built by a later issue; the package marks its place in the pipeline.
"""
