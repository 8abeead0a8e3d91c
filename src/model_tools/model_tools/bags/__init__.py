"""Rosbag2 tools: replay into the live graph, record outputs, evaluate offline.

Bags are read and written with ``rosbags`` (pure Python, sqlite3 and mcap), so
these tools run where ``ros2 bag`` is not installed. Modules that talk to the
ROS graph (``replay``, ``recorder``, ``live``) import rclpy lazily; ``bagio``,
``scoring`` and ``report`` import no ROS at all.
"""

from __future__ import annotations
