"""Launch the neural mapper: `ros2 launch neural_mapping mapper.launch.py [arg:=value ...]`.

Arguments: config (params YAML, default the installed config/mapper.yaml), use_sim_time
(true under `ros2 bag play --clock`), device (auto|cpu|cuda), namespace, rviz (true to
open RViz with config/mapper.rviz) and the four input topics color_topic, depth_topic,
camera_info_topic, pose_topic (remapped onto the node's color/image, depth/image,
depth/camera_info and pose|odom). dds_profile: the Fast DDS profile of the node's process
(default the installed config/fastdds_large_messages.xml: a 16 MB shared-memory segment, so
640x480 images arrive whole instead of as lossy UDP fragments; the camera's process should use
it too); ignored by other RMW implementations.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "neural_mapping"
EXECUTABLE = "mapper_node"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "mapper.yaml"]),
                              description="ROS parameters YAML of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag playback)"),
        DeclareLaunchArgument("device", default_value="auto", description="Compute device: auto, cpu or cuda"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz with config/mapper.rviz"),
        DeclareLaunchArgument("color_topic", default_value="/camera/color/image_raw", description="RGB image topic"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image_raw", description="Depth image topic"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/depth/camera_info",
                              description="Depth camera_info topic"),
        DeclareLaunchArgument("pose_topic", default_value="/camera/pose",
                              description="Camera pose topic (PoseStamped, or Odometry with pose_source odom)"),
        DeclareLaunchArgument("dds_profile",
                              default_value=PathJoinSubstitution([share, "config", "fastdds_large_messages.xml"]),
                              description="Fast DDS XML profile of the node's process (large messages over "
                                          "shared memory); ignored by other RMW implementations"),
    ]
    profile = LaunchConfiguration("dds_profile")
    mapper = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="neural_mapper",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        additional_env={"FASTRTPS_DEFAULT_PROFILES_FILE": profile, "FASTDDS_DEFAULT_PROFILES_FILE": profile},
        parameters=[
            LaunchConfiguration("config"),
            {
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
            },
        ],
        remappings=[
            ("color/image", LaunchConfiguration("color_topic")),
            ("depth/image", LaunchConfiguration("depth_topic")),
            ("depth/camera_info", LaunchConfiguration("camera_info_topic")),
            ("pose", LaunchConfiguration("pose_topic")),
            ("odom", LaunchConfiguration("pose_topic")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "mapper.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(args + [mapper, rviz])
