"""`python -m sim`: run scenario files, explore generated ones, time the simulator."""

import os
import sys

from ._cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:
    # The reader went away (`| head`): not an error of ours. Point stdout at
    # devnull so that the interpreter's final flush does not complain again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 0
raise SystemExit(code)
