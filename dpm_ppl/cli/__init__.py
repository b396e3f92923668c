"""The `dpm` command and what it works on: experiment and query scripts, run folders, reports.

The top of the stack: nothing in the library imports it. ``dpm --help`` imports only this package's parser.
"""

from ._main import main as main
