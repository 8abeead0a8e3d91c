"""Setuptools shim: metadata lives in setup.cfg; data_files are ament's."""
from setuptools import setup

PKG = "perception_tools"

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PKG}"]),
        (f"share/{PKG}", ["package.xml"]),
    ],
)
