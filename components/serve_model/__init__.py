"""Stage 5: the trained model put to use: predictions on new videos."""
