"""keras-distill's implementation, by concept; free to change between releases.

The public API is what `keras_distill` and its public subpackages export.
"""
