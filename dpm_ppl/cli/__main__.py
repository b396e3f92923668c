"""``python -m dpm_ppl.cli``: the `dpm` command."""

import sys

from ._main import main


sys.exit(main())
