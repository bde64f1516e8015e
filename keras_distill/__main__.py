"""`python -m keras_distill` runs the `keras-distill` command."""

import sys

from keras_distill._src.cli import main

sys.exit(main())
