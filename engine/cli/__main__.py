"""``python -m engine.cli``: the same as the ``tenantry`` script."""

from __future__ import annotations

import sys

from engine.cli.app import main

sys.exit(main())
