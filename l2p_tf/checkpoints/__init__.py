"""Reading pretrained checkpoints."""
