"""lmhost engine: catalog, instance table, supervisor, instance processes, policy.

Nothing here imports Flask or the app package (DESIGN.md).
"""
