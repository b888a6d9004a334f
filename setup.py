"""Package layout only (everything else is in pyproject.toml): the folders broker/, client/ and
storage/ are installed as the packages ringlog.broker, ringlog.client and ringlog.storage."""
from setuptools import find_packages, setup

FOLDERS = ("broker", "client", "storage")
packages = ["ringlog"] + ["ringlog." + name for name in find_packages(include=[f"{f}*" for f in FOLDERS])]
package_dir = {"ringlog": "ringlog", **{f"ringlog.{f}": f for f in FOLDERS}}

setup(packages=packages, package_dir=package_dir)
