"""The bottom layer: settings, errors, logging, metrics, tracing, ids and time.

``core`` imports nothing else from arbor.
"""
