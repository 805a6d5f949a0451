"""Plain-Python twins of the vectorized transforms: one partition at a time, line by line.

They define what the polars code must compute; property tests compare the two to the fen.
"""
