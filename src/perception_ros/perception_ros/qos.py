"""QoS profiles of the stack, one definition each.

A subscription matches a publisher when it asks for no more than the
publisher offers: a best-effort subscription matches reliable and best-effort
publishers, a reliable one only reliable publishers; a volatile subscription
matches volatile and transient-local publishers. The upstream conventions
each profile is chosen against are cited in docs/costmap.md ("Topics").
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def sensor_qos() -> QoSProfile:
    """Sensor-data QoS with depth 1: best effort, latest frame wins, no backlog."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Reliable + transient-local, depth 1: late subscribers (RViz, recorders) still get the last message."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def odometry_qos() -> QoSProfile:
    """Subscribing to nav_msgs/Odometry: best effort, depth 50, as robot_localization subscribes to its own inputs.

    Best effort matches the reliable publishers Nav2 reads (robot_localization's ``odometry/filtered``, drive
    controllers) and best-effort ones alike. Poses are kept in the node's own time-indexed buffer; the queue
    only holds what arrives while a frame is being built (0.5 s at 100 Hz), so no pose is dropped meanwhile.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def points_qos() -> QoSProfile:
    """Publishing per-frame outputs (point clouds, status) to any subscriber: reliable, volatile, depth 1.

    Nav2's ObstacleLayer and VoxelLayer subscribe best effort (sensor-data QoS, depth 50); a tool may ask for
    reliable delivery. A reliable publisher matches both, a best-effort one only the first. Volatile and
    depth 1: a late subscriber gets the next frame, not an old one.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
