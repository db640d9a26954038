"""Frame sources: dataset folders, rosbag2 bags and the synthetic scene."""
