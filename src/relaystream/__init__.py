"""relaystream: pull an online media stream into a real-time WebRTC room.

A self-hosted service whose control API speaks Volcengine RTC's StartRelayStream
family (Version 2023-11-01), so the official Volcengine SDKs work against it unchanged.
"""

__version__ = "0.1.0"
