"""Stage 1: download a class subset of a UCF101-layout zip with HTTP range reads."""
