"""Setuptools shim: metadata lives in setup.cfg; data_files are ament's."""
from setuptools import setup

PKG = "fused_perception"

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PKG}"]),
        (f"share/{PKG}", ["package.xml"]),
    ],
)
