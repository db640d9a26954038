"""ROS 2 node `neural_mapper` (executable `mapper_node`)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.node import Node

    from neural_mapping.config import iter_params

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = Node("neural_mapper")
    for name, _, default in iter_params():
        node.declare_parameter(name, default)
        node.get_logger().info(f"{name} = {node.get_parameter(name).value}")
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
