"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): pipelines conditioned by a vision-
language encoder (Cosmos 3 Omni, GLM-Image, JoyImage Edit Plus, Bria FIBO 2).
"""
