"""Makes the sample tests importable as `score.…` modules (pytest); SCOREs do not need it."""
