"""The reference Bernini model: the real stage structure and static shapes, small enough for CPU.

Weights are random with a fixed seed; shapes, dtypes and data flow follow the production pipeline.
"""
