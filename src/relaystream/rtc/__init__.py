"""Rooms: participants, RTC tokens, the embedded SFU and its WHEP/WHIP signaling.

A room forwards encoded packets (H.264 Annex B, Opus) from one publisher to any number
of subscribers; it never decodes or encodes. It knows nothing about source URLs.
"""
