"""Conditional GAN: a 48x48 face for a requested age (age as a continuous label).

models (paper + strong presets, by name), losses, train (Ray Train loop + driver), metrics
(age consistency, CNN Fréchet distance), generate (age grids), job (the train-cgan job).
"""
