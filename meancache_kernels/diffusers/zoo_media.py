"""Tiny offline builds for the compatibility matrix (registered in :mod:`.zoo`): video, audio and editing pipelines
built later (Wan-Animate, Sana-WM, ACE-Step, Kandinsky 5 I2I, LongCat-Image Edit).
"""
