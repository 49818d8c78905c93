"""Stage 3: train the (2+1)D ResNet on the extracted clips."""
