"""launch/mapper.launch.py: structure (always, by parsing) and a real launch (when launch_ros is importable)."""

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "mapper.launch.py"
ARGS = {"config", "use_sim_time", "device", "namespace", "rviz", "dds_profile"}
INPUTS = {"color/image", "depth/image", "depth/camera_info", "pose"}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def _kw(call, key):
    for k in call.keywords:
        if k.arg == key:
            return k.value
    return None


def _const(node, consts):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    return None


def test_launch_file_structure_by_parsing():
    tree = ast.parse(LAUNCH.read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = {_const(c.args[0], consts) for c in _calls(tree, "DeclareLaunchArgument")}
    assert ARGS <= declared
    nodes = _calls(tree, "Node")
    mapper = [n for n in nodes if _const(_kw(n, "executable"), consts) == "mapper_node"]
    assert len(mapper) == 1
    m = mapper[0]
    assert _const(_kw(m, "package"), consts) == "neural_mapping"
    # remaps for the four inputs, each to a launch argument
    remaps = _kw(m, "remappings")
    pairs = {_const(e.elts[0], consts): e.elts[1] for e in remaps.elts}
    assert INPUTS <= set(pairs)
    for src in INPUTS:
        assert isinstance(pairs[src], ast.Call) and pairs[src].func.id == "LaunchConfiguration"
    # parameters: the config file argument, use_sim_time and device
    params_src = ast.unparse(_kw(m, "parameters"))
    for word in ("LaunchConfiguration('config')", "'use_sim_time'", "'device'", "LaunchConfiguration('namespace')") :
        assert word in params_src or word in ast.unparse(m)
    # installed files: the config default and rviz file live in the package share, and setup.py installs them
    src = LAUNCH.read_text()
    assert re.search(r"FindPackageShare\(PACKAGE\)", src) and consts.get("PACKAGE") == "neural_mapping"
    # the node's process gets the large-message DDS profile (both variable names: Humble..Jazzy, Kilted)
    env = ast.unparse(_kw(m, "additional_env"))
    assert "'FASTRTPS_DEFAULT_PROFILES_FILE': profile" in env and "'FASTDDS_DEFAULT_PROFILES_FILE': profile" in env
    assert "profile = LaunchConfiguration('dds_profile')" in ast.unparse(tree)
    for rel in ("config/mapper.yaml", "config/mapper.rviz", "config/fastdds_large_messages.xml"):
        a, b = rel.split("/")
        assert f'"{a}", "{b}"' in src, rel
        assert (REPO / rel).is_file()
    setup = (REPO / "setup.py").read_text()
    assert 'glob("launch/*.py")' in setup and 'glob("config/*.yaml")' in setup and 'glob("config/*.rviz")' in setup
    assert "mapper_node = neural_mapping.ros.node:main" in setup
    # rviz is conditional on the rviz argument
    rviz = [n for n in nodes if _const(_kw(n, "executable"), consts) == "rviz2"]
    assert rviz and "IfCondition(LaunchConfiguration('rviz'))" in ast.unparse(rviz[0])


def test_rviz_config_shows_every_product_in_map():
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "mapper.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    topics = {d["Topic"]["Value"]: d["Class"] for d in vm["Displays"] if "Topic" in d}
    assert topics["/neural_mapper/mesh"] == "rviz_default_plugins/Marker"
    assert topics["/neural_mapper/occupancy"] == "rviz_default_plugins/Map"
    assert topics["/neural_mapper/occupied_voxels"] == "rviz_default_plugins/PointCloud2"
    assert topics["/neural_mapper/esdf_slice"] == "rviz_default_plugins/PointCloud2"
    assert topics["/neural_mapper/rendered/color"] == "rviz_default_plugins/Image"


def test_launch_description_and_real_launch(ros_env, tmp_path):
    """With launch_ros (a ROS install): inspect generate_launch_description() and launch it for real."""
    pytest.importorskip("launch_ros")
    import importlib.util

    import launch
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("mapper_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    names = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert ARGS <= names
    # real launch: needs the package installed in an ament prefix (ros2 launch finds share/ and lib/)
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix("neural_mapping"))
    except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
        pytest.skip("neural_mapping is not installed in an ament prefix")
    if not (prefix / "lib" / "neural_mapping" / "mapper_node").exists():
        pytest.skip("mapper_node is not installed under <prefix>/lib/neural_mapping")
    log = open(tmp_path / "launch.log", "w")
    code = ("import sys, launch; from launch.launch_description_sources import PythonLaunchDescriptionSource as S; "
            "from launch.actions import IncludeLaunchDescription as I; ls = launch.LaunchService(); "
            f"ls.include_launch_description(I(S({str(LAUNCH)!r}), launch_arguments={{'device': 'cpu'}}.items())); "
            "sys.exit(ls.run())")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ros_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        import rclpy

        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        node = rclpy.create_node("launch_probe", context=ctx)
        t_end = time.monotonic() + 60
        found = False
        while time.monotonic() < t_end and not found:
            found = any(name == "/neural_mapper/query_field" for name, _ in node.get_service_names_and_types())
            time.sleep(0.2)
        node.destroy_node()
        ctx.try_shutdown()
        assert found, (tmp_path / "launch.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, 2)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


FLEET = REPO / "launch" / "fleet.launch.py"
FLEET_ARGS = {"robots", "config", "device", "use_sim_time", "robot_clock", "color_topic", "depth_topic",
              "camera_info_topic", "pose_topic", "pose_source", "dds_profile"}


def test_fleet_launch_file_structure_by_parsing():
    """fleet.launch.py: a mapper node per robot (its namespace, submaps on, robot id = its name) and the map server."""
    src = FLEET.read_text()
    tree = ast.parse(src)
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    declared = {_const(c.args[0], consts) for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared == FLEET_ARGS
    nodes = {_const(_kw(n, "executable"), consts): n for n in _calls(tree, "Node")}
    assert set(nodes) == {"mapper_node", "map_server"}
    assert consts["PACKAGE"] == "neural_mapping" and all(_const(_kw(n, "package"), consts) == "neural_mapping"
                                                          for n in nodes.values())
    robot, server = nodes["mapper_node"], nodes["map_server"]
    assert ast.unparse(_kw(robot, "namespace")) == "r" and _const(_kw(robot, "name"), consts) == "neural_mapper"
    params = ast.unparse(_kw(robot, "parameters"))
    assert "'submaps.enabled': True" in params and "'submaps.robot_id': r" in params
    assert "arg['config']" in params and "arg['config']" in ast.unparse(_kw(server, "parameters"))
    assert _const(_kw(server, "name"), consts) == "map_server" and _kw(server, "namespace") is None
    for n in nodes.values():  # both get the large-message DDS profile
        assert ast.unparse(_kw(n, "additional_env")) == "env"
    assert "'FASTRTPS_DEFAULT_PROFILES_FILE': arg['dds_profile']" in src.replace('"', "'")
    # the robots argument, parsed by the file's own function
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "robot_names")
    ns: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(FLEET), "exec"), ns)
    assert ns["robot_names"](" r1, /r2/,,r3 ") == ["r1", "r2", "r3"] and ns["robot_names"]("") == []
    setup = (REPO / "setup.py").read_text()
    assert "map_server = neural_mapping.ros.map_server:main" in setup


def test_fleet_real_launch(ros_env):
    """With launch_ros (a ROS install): two robots and the map server come up with their services."""
    pytest.importorskip("launch_ros")
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix("neural_mapping"))
    except (PackageNotFoundError, OSError):
        pytest.skip("neural_mapping is not installed in an ament prefix")
    if not (prefix / "lib" / "neural_mapping" / "map_server").exists():
        pytest.skip("map_server is not installed under <prefix>/lib/neural_mapping")
    code = ("import sys, launch; from launch.launch_description_sources import PythonLaunchDescriptionSource as S; "
            "from launch.actions import IncludeLaunchDescription as I; ls = launch.LaunchService(); "
            f"ls.include_launch_description(I(S({str(FLEET)!r}), launch_arguments={{'device': 'cpu', "
            "'robots': 'r1,r2'}.items())); sys.exit(ls.run())")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ros_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import rclpy

        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        node = rclpy.create_node("fleet_launch_probe", context=ctx)
        want = {"/r1/neural_mapper/query_field", "/r2/neural_mapper/query_field", "/map_server/query_field"}
        t_end = time.monotonic() + 120
        seen: set = set()
        while time.monotonic() < t_end and not want <= seen:
            seen = {name for name, _ in node.get_service_names_and_types()}
            time.sleep(0.5)
        topics = {name for name, _ in node.get_topic_names_and_types()}
        node.destroy_node()
        ctx.try_shutdown()
        assert want <= seen, sorted(seen)
        assert {"/r1/neural_mapper/submaps", "/r2/neural_mapper/submaps"} <= topics
    finally:
        os.killpg(proc.pid, 2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
