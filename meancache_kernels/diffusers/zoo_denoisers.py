"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): pipelines whose denoiser is not
pipe.transformer alone (Ideogram 4, DreamLite).
"""
