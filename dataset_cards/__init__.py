"""Dataset-card template shipped with the package; cards written by ``zoo-publish`` may live here too."""
