import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

warnings.filterwarnings("ignore", message=".*no backend weights.*")


def shared_path(*parts):
    """Path under ../shared, or None when it is absent (a user's fresh clone)."""
    path = os.path.join(SHARED, *parts)
    return path if os.path.exists(path) else None
