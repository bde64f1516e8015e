"""keras-distill's implementation, by concept; free to change between releases.

The public API is what `keras_distill` and its public subpackages export.
"""

from keras_distill._src.utils import command_environment

# Every module that loads TensorFlow is in here, so this runs before TensorFlow loads.
command_environment.set_defaults()
