"""Stage 2: decode videos into fixed-size RGB clips, stored as TFRecord shards."""
