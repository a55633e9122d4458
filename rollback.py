"""Return BestBox boxes from vLLM to llama.cpp.

    pyinfra inventory.py rollback.py --dry --diff   # show what would change
    pyinfra inventory.py rollback.py                # apply

Stops and removes the vLLM container, moves the archived llama.cpp files back,
restores every file the deploy modified from its backup, and removes the
files it created (unless bestbox_rollback_keep_created is true). A file
changed by hand since the deploy stops the rollback before anything changes.
"""

from pyinfra import local

local.include("tasks/rollback.py")
