"""The only subpackage that imports rclpy."""
