"""The main job shown to a new user: `keras-distill demo` (`make demo`)."""
