"""Frozen pretrained backbones used by the losses and metrics (VGG19, VGG-Face, AlexNet, Inception-v3)."""
