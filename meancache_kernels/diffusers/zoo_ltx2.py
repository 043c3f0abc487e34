"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): LTX-2 (audio and video latents; the
audio scheduler is a deep copy of the adapted one).
"""
