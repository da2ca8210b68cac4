"""plug_lite: PLUG (Pivot Language gUided Generation; Zhang et al., ACL 2024) on one GPU.

``import plug_lite`` needs only the standard library; each verb module imports its heavy
libraries inside the functions that use them.
"""

__version__ = "0.1.0"
