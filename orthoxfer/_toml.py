"""``tomllib`` on every Python the package supports: the standard library's from 3.11, on 3.10 its PyPI original
``tomli`` (the same parser and API), which pyproject.toml installs there only."""

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

__all__ = ["tomllib"]
