"""The reference Bernini model: the real stage structure and static shapes, small enough for CPU.

Its weights are trained here on a procedural data set of a few classes (make weights), so what it draws can be
checked against what it was asked for; shapes, dtypes and data flow follow the production pipeline.
"""
