from glob import glob

from setuptools import find_packages, setup

package_name = "neural_mapping"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["neural_mapping", "neural_mapping.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    # Ranges, not pins: users bring their own (CUDA) torch. requirements.txt pins
    # the tested set for this project's machines.
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "open3d>=0.18",
        "rosbags>=0.10",
        "scikit-image>=0.21",
        "scipy>=1.10",
        "pillow>=9",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        # the fused Triton hash-grid kernels on CUDA (neural_mapping/hashgrid_triton.py); CUDA builds of
        # torch already bring it. On CPU it runs only the kernels' tests, through Triton's interpreter.
        "gpu": ["triton>=3.0"],
        # offline submap training in parallel Ray tasks (`neural-mapping map --submaps --workers N`)
        "ray": ["ray>=2.9"],
    },
    zip_safe=True,
    maintainer="neural_mapping maintainers",
    maintainer_email="neural-mapping@example.com",
    description="Online neural implicit mapping (SDF / NeRF) for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "mapper_node = neural_mapping.ros.node:main",
            "neural-mapping = neural_mapping.cli:main",
            "map_server = neural_mapping.ros.map_server:main",
        ],
    },
)
