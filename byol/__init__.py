"""BYOL pretraining for low-label image classification: the library behind the four stage scripts."""
