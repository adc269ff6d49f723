"""A stand-in stage for tests of stopping: starts a grandchild (``sleep``) in its own process group, writes the
grandchild's pid to the file given, then sleeps until it is signalled."""

import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    child = subprocess.Popen(["sleep", "600"])
    Path(sys.argv[1]).write_text(str(child.pid))
    time.sleep(600)
