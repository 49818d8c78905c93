"""Stage 1: download the chosen videos of a zip, folder or annotation list, split three ways."""
