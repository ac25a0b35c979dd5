"""Shim for editable installs; metadata lives in setup.cfg."""
from setuptools import setup

setup()
