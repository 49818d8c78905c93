"""Stage 4: score the trained model on the test split and write the report."""
