"""Where the project's non-Python files live.

sql/, deploy/ and schemas/ sit at the repository root (the layout users asked for). The package
is installed in editable mode from a checkout, so they are found next to the package directory;
METRICS_PLATFORM_HOME points elsewhere when the package runs from another location.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("METRICS_PLATFORM_HOME", Path(__file__).resolve().parent.parent))
SQL_DIR = PROJECT_ROOT / "sql"
DEPLOY_DIR = PROJECT_ROOT / "deploy"
SCHEMA_DIR = PROJECT_ROOT / "schemas"
