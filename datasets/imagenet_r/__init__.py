"""imagenet_r_local dataset (ImageNet-R from the local archive, 200-class labels)."""
