"""The pipeline definition, its runners and the ``videoclf`` command line."""
