"""Launch a fleet on one machine: `ros2 launch neural_mapping fleet.launch.py robots:=r1,r2,r3 [arg:=value ...]`.

One mapper node per robot (node `neural_mapper` in namespace `/<robot>`, with submaps.enabled and
submaps.robot_id = the robot's name), publishing its frozen submaps on `/<robot>/neural_mapper/submaps`,
and one `map_server` that discovers those topics, merges the submaps and serves the fleet's map
(`/map_server/mesh`, `/map_server/query_field`, ...). docs/fleet.md.

Arguments: robots (comma-separated names, each a ROS namespace), config (params YAML of the robots
and of the server: the same grid for all; default the installed config/mapper.yaml), device,
use_sim_time, robot_clock (true: each robot follows /<robot>/clock, as `neural-mapping play BAG
--prefix /<robot>` publishes it), the four input topics (relative names resolve inside each
robot's namespace: color_topic camera/color/image_raw is /r1/camera/color/image_raw for r1, what
`play --prefix /r1` publishes from a bag recorded with /camera/...), pose_source, and dds_profile
(the Fast DDS large-message profile of every process). Poses of all robots must be in one shared
`map` frame (the fleet's localisation gives it).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "neural_mapping"
ROBOT_EXECUTABLE = "mapper_node"
SERVER_EXECUTABLE = "map_server"


def robot_names(text: str) -> list[str]:
    """'r1, r2,,r3' -> ['r1', 'r2', 'r3'] (leading/trailing slashes dropped)."""
    return [r.strip().strip("/") for r in text.split(",") if r.strip().strip("/")]


def fleet_nodes(context):
    """The robots' mapper nodes and the map server, from the resolved arguments."""
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        "robots", "config", "device", "use_sim_time", "robot_clock", "dds_profile", "color_topic", "depth_topic",
        "camera_info_topic", "pose_topic", "pose_source")}
    robots = robot_names(arg["robots"])
    if not robots:
        raise RuntimeError("fleet.launch.py: robots:= names no robot (e.g. robots:=r1,r2)")
    sim = arg["use_sim_time"].lower() in ("true", "1", "yes")
    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": arg["dds_profile"], "FASTDDS_DEFAULT_PROFILES_FILE": arg["dds_profile"]}
    nodes = []
    for r in robots:
        remaps = [("color/image", arg["color_topic"]), ("depth/image", arg["depth_topic"]),
                  ("depth/camera_info", arg["camera_info_topic"]), ("pose", arg["pose_topic"]),
                  ("odom", arg["pose_topic"])]
        if arg["robot_clock"].lower() in ("true", "1", "yes"):
            remaps.append(("/clock", f"/{r}/clock"))
        nodes.append(Node(
            package=PACKAGE, executable=ROBOT_EXECUTABLE, name="neural_mapper", namespace=r, output="screen",
            additional_env=env,
            parameters=[arg["config"], {"use_sim_time": sim, "device": arg["device"], "pose_source": arg["pose_source"],
                                        "submaps.enabled": True, "submaps.robot_id": r}],
            remappings=remaps))
    nodes.append(Node(
        package=PACKAGE, executable=SERVER_EXECUTABLE, name="map_server", output="screen", additional_env=env,
        parameters=[arg["config"], {"device": arg["device"]}]))
    return nodes


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    args = [
        DeclareLaunchArgument("robots", default_value="r1,r2", description="Comma-separated robot names (namespaces)"),
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "mapper.yaml"]),
                              description="ROS parameters YAML of the robots and the map server (one grid for all)"),
        DeclareLaunchArgument("device", default_value="auto", description="Compute device: auto, cpu or cuda"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Robots follow a /clock (bags)"),
        DeclareLaunchArgument("robot_clock", default_value="true",
                              description="Each robot's /clock is /<robot>/clock (as `play --prefix` publishes it)"),
        DeclareLaunchArgument("color_topic", default_value="camera/color/image_raw",
                              description="RGB image topic (relative: inside each robot's namespace)"),
        DeclareLaunchArgument("depth_topic", default_value="camera/depth/image_raw", description="Depth image topic"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera/depth/camera_info",
                              description="Depth camera_info topic"),
        DeclareLaunchArgument("pose_topic", default_value="camera/pose",
                              description="Camera pose topic in the shared map frame (PoseStamped, or Odometry)"),
        DeclareLaunchArgument("pose_source", default_value="pose", description="pose, odom or tf"),
        DeclareLaunchArgument("dds_profile",
                              default_value=PathJoinSubstitution([share, "config", "fastdds_large_messages.xml"]),
                              description="Fast DDS XML profile of every process (submaps are large messages)"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=fleet_nodes)])
