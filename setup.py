from setuptools import find_packages, setup

setup(
    name="fwcluster",
    version="0.1.0",
    description="Mininet testbed for firewall clusters that synchronize connection state",
    packages=find_packages(include=["nodes", "nodes.*", "controller", "topo", "experiments",
                                    "experiments.*"]),
    package_data={"experiments": ["specs/*.toml", "specs/reproduce/*.toml", "rules/*.rules"],
                  "nodes": ["wireshark/*.lua"]},
    python_requires=">=3.11",
    entry_points={"console_scripts": [
        "fw-node = nodes.shell.node:main",
        "fw-inspect = nodes.observe.inspect:main",
        "fwcluster = experiments.cli:main",
        "fwcluster-controller = controller.manager:main",
    ]},
)
